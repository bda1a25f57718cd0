// Entry point of `pgswift`: parse the command line, then check the configuration or run the service.
import Glibc

exit(SupervisorMain.run(Array(CommandLine.arguments.dropFirst())))
