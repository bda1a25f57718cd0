// Entry point of `pgswift`: parse the command line, then check the configuration or run the service.
import Shared

Posix.exit(SupervisorMain.run(Array(CommandLine.arguments.dropFirst())))
