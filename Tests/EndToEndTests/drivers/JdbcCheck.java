// The PostgreSQL JDBC driver through pgswift: usage
// `java -cp postgresql.jar JdbcCheck.java MODE URL USER PASSWORD`; MODE is prepared
// (prepareThreshold=1: every PreparedStatement becomes a named server statement at once), default
// (the driver's threshold of 5: unnamed first, named later) or unnamed (prepareThreshold=0: never
// named). JDBC sends everything with the extended protocol, several statements of one execute()
// behind one Sync, and batches pipelined. Run by DriverTests with Debian's libpostgresql-jdbc-java.
// Prints one "OK ..." line and exits 0, or prints the failure and exits 1.

import java.io.StringReader;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;

public class JdbcCheck {
    static final int CLIENTS = 4;
    static final int ROUNDS = 40;

    static void check(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    static void oneClient(String url, Properties props, int n) throws Exception {
        try (Connection conn = DriverManager.getConnection(url, props)) {
            String app = "jdbc-" + n;
            // Session settings in transaction mode, sent as unnamed extended-protocol statements:
            // pgswift carries them to whichever server serves the client next (issue 19).
            try (Statement st = conn.createStatement()) {
                st.execute("SET application_name = '" + app + "'");
                st.execute("SET statement_timeout = '12s'");
            }
            Set<Integer> backends = new HashSet<>();
            try (PreparedStatement params = conn.prepareStatement("select ?::int + ?::int, ?::text, ?::text is null");
                 PreparedStatement settings = conn.prepareStatement(
                     "select current_setting('application_name'), current_setting('statement_timeout'), pg_backend_pid()");
                 PreparedStatement series = conn.prepareStatement("select g, g * ? from generate_series(1, 100) g")) {
                String timeout = "12s";
                for (int i = 0; i < ROUNDS; i++) {
                    if (i == ROUNDS / 2 || i == 3 * ROUNDS / 4) {
                        // Another value, then the first again: with prepareThreshold=1 that runs the
                        // named statement of the first SET once more, without its Parse, on another link.
                        timeout = timeout.equals("12s") ? "13s" : "12s";
                        try (Statement st = conn.createStatement()) {
                            st.execute("SET statement_timeout = '" + timeout + "'");
                        }
                    }
                    params.setInt(1, n);
                    params.setInt(2, i);
                    params.setString(3, "zürich €");
                    params.setNull(4, java.sql.Types.VARCHAR);
                    try (ResultSet rs = params.executeQuery()) {
                        check(rs.next(), "no row");
                        check(rs.getInt(1) == n + i && "zürich €".equals(rs.getString(2)) && rs.getBoolean(3),
                              "round " + i + ": parameters gave " + rs.getInt(1) + " " + rs.getString(2) + " " + rs.getBoolean(3));
                    }
                    try (ResultSet rs = settings.executeQuery()) {
                        check(rs.next(), "no row");
                        backends.add(rs.getInt(3));
                        check(app.equals(rs.getString(1)) && timeout.equals(rs.getString(2)),
                              "round " + i + ": settings " + rs.getString(1) + " " + rs.getString(2) + " on backend " + rs.getInt(3));
                    }
                    // Two statements in one execute(): two Parse/Bind/Execute behind one Sync.
                    try (Statement st = conn.createStatement()) {
                        check(st.execute("select 1; select 2"), "multi-statement gave no result");
                        check(st.getMoreResults(), "multi-statement gave one result");
                    }
                    transaction(conn, i);
                    failedTransaction(conn);
                    series.setInt(1, 3);
                    int count = 0;
                    try (ResultSet rs = series.executeQuery()) {
                        while (rs.next()) {
                            check(rs.getInt(2) == rs.getInt(1) * 3, "row " + rs.getInt(1) + " gave " + rs.getInt(2));
                            count++;
                        }
                    }
                    check(count == 100, "round " + i + ": " + count + " rows");
                }
            }
        }
    }

    /** One backend throughout; a batch of inserts pipelined, and COPY, into a temp table gone at commit. */
    static void transaction(Connection conn, int i) throws Exception {
        conn.setAutoCommit(false);
        try (Statement st = conn.createStatement()) {
            int pid = scalarInt(st, "select pg_backend_pid()");
            st.execute("create temp table t (i int, s text) on commit drop");
            try (PreparedStatement ins = conn.prepareStatement("insert into t values (?, ?)")) {
                for (int k = 0; k < 25; k++) {
                    ins.setInt(1, k);
                    ins.setString(2, "row " + k + " of " + i);
                    ins.addBatch();
                }
                int[] counts = ins.executeBatch();
                check(counts.length == 25, "batch gave " + counts.length + " counts");
            }
            StringBuilder data = new StringBuilder();
            for (int k = 25; k < 50; k++) data.append(k).append('\t').append("row ").append(k).append(" of ").append(i).append('\n');
            CopyManager copy = conn.unwrap(PGConnection.class).getCopyAPI();
            long copied = copy.copyIn("COPY t (i, s) FROM STDIN", new StringReader(data.toString()));
            check(copied == 25, "copied " + copied);
            try (ResultSet rs = st.executeQuery("select count(*), sum(i) from t")) {
                check(rs.next() && rs.getLong(1) == 50 && rs.getLong(2) == 1225, "temp table holds the wrong rows");
            }
            int again = scalarInt(st, "select pg_backend_pid()");
            check(pid == again, "backend changed inside a transaction: " + pid + " then " + again);
            conn.commit();
        } finally {
            conn.setAutoCommit(true);
        }
    }

    static void failedTransaction(Connection conn) throws Exception {
        conn.setAutoCommit(false);
        try (Statement st = conn.createStatement()) {
            st.execute("set local work_mem = '77MB'");
            try {
                st.executeQuery("select 1/0");
                throw new AssertionError("division by zero succeeded");
            } catch (SQLException e) {
                check("22012".equals(e.getSQLState()), "division by zero gave " + e.getSQLState() + ": " + e.getMessage());
            }
            conn.rollback();
        } finally {
            conn.setAutoCommit(true);
        }
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("select txid_current_if_assigned() is null and current_setting('work_mem') <> '77MB'")) {
            check(rs.next() && rs.getBoolean(1), "transaction or its SET LOCAL left open");
        }
    }

    static int scalarInt(Statement st, String sql) throws SQLException {
        try (ResultSet rs = st.executeQuery(sql)) {
            check(rs.next(), "no row for " + sql);
            return rs.getInt(1);
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 4 || !List.of("prepared", "default", "unnamed").contains(args[0])) {
            System.err.println("usage: JdbcCheck prepared|default|unnamed URL USER PASSWORD");
            System.exit(2);
        }
        String mode = args[0];
        Properties props = new Properties();
        props.setProperty("user", args[2]);
        props.setProperty("password", args[3]);
        props.setProperty("sslmode", "disable");
        if (mode.equals("prepared")) props.setProperty("prepareThreshold", "1");
        if (mode.equals("unnamed")) props.setProperty("prepareThreshold", "0");
        List<Thread> threads = new ArrayList<>();
        List<String> failed = java.util.Collections.synchronizedList(new ArrayList<>());
        for (int n = 0; n < CLIENTS; n++) {
            final int c = n;
            Thread t = new Thread(() -> {
                try {
                    oneClient(args[1], props, c);
                } catch (Throwable e) {
                    failed.add("client " + c + ": " + e);
                }
            });
            t.start();
            threads.add(t);
        }
        for (Thread t : threads) t.join(240_000);
        String version = org.postgresql.Driver.class.getPackage().getImplementationVersion();
        if (!failed.isEmpty() || threads.stream().anyMatch(Thread::isAlive)) {
            System.out.println("FAIL JDBC " + version + " " + mode + ": " + (failed.isEmpty() ? "timed out" : String.join("; ", failed)));
            System.exit(1);
        }
        System.out.println("OK JDBC " + version + " " + mode + ": " + CLIENTS + " connections x " + ROUNDS + " rounds");
        System.exit(0);
    }
}
