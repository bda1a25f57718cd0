// The one place pgswift's version is written down (`pgswift --version`, the worker, the admin console).
public enum PgswiftVersion {
    public static let string = "0.1.0"
}
