// pgx (v4, Go) through pgswift: usage `pgx_check MODE DSN`; MODE is prepared (pgx's default
// statement cache: named statements, described once), unnamed (no cache: an unnamed statement
// described before every query) or simple (PreferSimpleProtocol: every query in the simple protocol,
// parameters interpolated by pgx). Built by DriverTests with Debian's golang-go and
// golang-github-jackc-pgx-v4-dev (GOPATH mode). Prints one "OK ..." line and exits 0, or prints
// the failure and exits 1.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"
)

const clients = 4
const rounds = 40

func check(cond bool, format string, args ...interface{}) error {
	if cond {
		return nil
	}
	return fmt.Errorf(format, args...)
}

func oneClient(ctx context.Context, config *pgx.ConnConfig, n int) error {
	conn, err := pgx.ConnectConfig(ctx, config)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	// Session settings in transaction mode: pgswift carries them to whichever server serves the
	// client next (issue 19). Exec without arguments goes in the simple protocol.
	app := fmt.Sprintf("pgx-%d", n)
	if _, err := conn.Exec(ctx, "SET application_name = '"+app+"'"); err != nil {
		return fmt.Errorf("set application_name: %w", err)
	}
	if _, err := conn.Exec(ctx, "SET statement_timeout = '12s'"); err != nil {
		return fmt.Errorf("set statement_timeout: %w", err)
	}
	backends := map[int32]bool{}
	for i := 0; i < rounds; i++ {
		var sum int32
		var text string
		var isNull bool
		err := conn.QueryRow(ctx, "select $1::int + $2::int, $3::text, $4::text is null", n, i, "zürich €", nil).
			Scan(&sum, &text, &isNull)
		if err != nil {
			return fmt.Errorf("round %d parameters: %w", i, err)
		}
		if err := check(sum == int32(n+i) && text == "zürich €" && isNull, "parameters gave %d %q %v", sum, text, isNull); err != nil {
			return err
		}
		// Both settings, on whatever server this query got.
		var gotApp, gotTimeout string
		var pid int32
		if err := conn.QueryRow(ctx, "select current_setting('application_name'), current_setting('statement_timeout'), pg_backend_pid()").
			Scan(&gotApp, &gotTimeout, &pid); err != nil {
			return fmt.Errorf("round %d settings: %w", i, err)
		}
		backends[pid] = true
		if err := check(gotApp == app && gotTimeout == "12s", "round %d: settings %q %q on backend %d", i, gotApp, gotTimeout, pid); err != nil {
			return err
		}
		// Several statements in one simple Query.
		if _, err := conn.Exec(ctx, "select 1; select 2"); err != nil {
			return fmt.Errorf("round %d multi-statement: %w", i, err)
		}
		// A transaction: one backend throughout, COPY into a temp table gone at commit.
		if err := transaction(ctx, conn, i); err != nil {
			return fmt.Errorf("round %d transaction: %w", i, err)
		}
		// A failed transaction is rolled back and leaves nothing open.
		if err := failedTransaction(ctx, conn); err != nil {
			return fmt.Errorf("round %d failed transaction: %w", i, err)
		}
		// A batch: many queries pipelined behind one Sync.
		if err := batch(ctx, conn, i); err != nil {
			return fmt.Errorf("round %d batch: %w", i, err)
		}
		rows, err := conn.Query(ctx, "select g, g * $1::int from generate_series(1, 100) g", 3)
		if err != nil {
			return fmt.Errorf("round %d rows: %w", i, err)
		}
		count := 0
		for rows.Next() {
			var g, d int32
			if err := rows.Scan(&g, &d); err != nil {
				rows.Close()
				return err
			}
			if d != g*3 {
				rows.Close()
				return fmt.Errorf("row %d gave %d", g, d)
			}
			count++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("round %d rows: %w", i, err)
		}
		if err := check(count == 100, "round %d: %d rows", i, count); err != nil {
			return err
		}
	}
	return nil
}

func transaction(ctx context.Context, conn *pgx.Conn, i int) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	var pid, again int32
	if err := tx.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "create temp table t (i int, s text) on commit drop"); err != nil {
		return err
	}
	rows := make([][]interface{}, 50)
	for k := range rows {
		rows[k] = []interface{}{int32(k), fmt.Sprintf("row %d of %d", k, i)}
	}
	copied, err := tx.CopyFrom(ctx, pgx.Identifier{"t"}, []string{"i", "s"}, pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	var c, s int64
	if err := tx.QueryRow(ctx, "select count(*), sum(i) from t where s like $1", "row %").Scan(&c, &s); err != nil {
		return err
	}
	if err := check(copied == 50 && c == 50 && s == 1225, "copied %d, then %d rows summing %d", copied, c, s); err != nil {
		return err
	}
	if err := tx.QueryRow(ctx, "select pg_backend_pid()").Scan(&again); err != nil {
		return err
	}
	if err := check(pid == again, "backend changed inside a transaction: %d then %d", pid, again); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func failedTransaction(ctx context.Context, conn *pgx.Conn) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "set local work_mem = '77MB'"); err != nil {
		return err
	}
	var x int32
	err = tx.QueryRow(ctx, "select 1 / $1::int", 0).Scan(&x)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "22012" {
		return fmt.Errorf("division by zero gave %v", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		return err
	}
	var none bool
	if err := conn.QueryRow(ctx, "select txid_current_if_assigned() is null and current_setting('work_mem') <> '77MB'").Scan(&none); err != nil {
		return err
	}
	return check(none, "transaction or its SET LOCAL left open")
}

func batch(ctx context.Context, conn *pgx.Conn, i int) error {
	b := &pgx.Batch{}
	for k := 0; k < 10; k++ {
		b.Queue("select $1::int * 2", k)
	}
	b.Queue("select count(*) from generate_series(1, $1::int)", i+1)
	res := conn.SendBatch(ctx, b)
	for k := 0; k < 10; k++ {
		var v int32
		if err := res.QueryRow().Scan(&v); err != nil {
			res.Close()
			return err
		}
		if v != int32(2*k) {
			res.Close()
			return fmt.Errorf("batch query %d gave %d", k, v)
		}
	}
	var c int64
	if err := res.QueryRow().Scan(&c); err != nil {
		res.Close()
		return err
	}
	if err := res.Close(); err != nil {
		return err
	}
	return check(c == int64(i+1), "batch count %d", c)
}

func main() {
	if len(os.Args) < 3 || !strings.Contains(" prepared unnamed simple ", " "+os.Args[1]+" ") {
		fmt.Fprintln(os.Stderr, "usage: pgx_check prepared|unnamed|simple DSN")
		os.Exit(2)
	}
	mode := os.Args[1]
	config, err := pgx.ParseConfig(os.Args[2])
	if err != nil {
		fmt.Printf("FAIL pgx %s: %v\n", mode, err)
		os.Exit(1)
	}
	switch mode {
	case "unnamed":
		config.BuildStatementCache = nil
	case "simple":
		config.PreferSimpleProtocol = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, clients)
	for n := 0; n < clients; n++ {
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			errs[n] = oneClient(ctx, config, n)
		}(n)
	}
	wg.Wait()
	var failed []string
	for n, e := range errs {
		if e != nil {
			failed = append(failed, fmt.Sprintf("client %d: %v", n, e))
		}
	}
	if len(failed) > 0 {
		fmt.Printf("FAIL pgx v4 %s: %s\n", mode, strings.Join(failed, "; "))
		os.Exit(1)
	}
	fmt.Printf("OK pgx v4 %s: %d connections x %d rounds\n", mode, clients, rounds)
}
