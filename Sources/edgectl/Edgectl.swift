// The root command, the options every subcommand shares, and how errors become messages and exit codes.

import ArgumentParser
import EdgedControl
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The C exit, out of reach of ParsableCommand.exit inside the command types.
func terminate(_ code: Int32) -> Never { exit(code) }

struct Edgectl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edgectl",
        abstract: "Look after the edged node on this machine.",
        discussion: """
            Talks to edged over its local socket (root only). Exit codes: 0 ok, 1 failure or node degraded, \
            2 usage error or edged not reachable.
            """,
        version: edgectlVersion,
        subcommands: [StatusCommand.self, PodsCommand.self, LogsCommand.self, ImagesCommand.self, JoinCommand.self, VersionCommand.self],
        defaultSubcommand: StatusCommand.self
    )

    /// Parses, runs, and exits with edgectl's exit codes (ArgumentParser's own usage code is 64; ours is 2).
    static func runAndExit() async -> Never {
        do {
            let arguments = rewritingLeadingGlobalOptions(Array(CommandLine.arguments.dropFirst()))
            var command = try parseAsRoot(rewritingBareAutonomy(arguments))
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            terminate(0)
        } catch let error as ExitCode {
            terminate(error.rawValue)
        } catch let error as ControlClientError {
            Output.error(error.message)
            terminate(2)
        } catch let error as ControlError {
            Output.error(error.message)
            terminate(1)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                exit(withError: error)  // --help, --version
            }
            Output.error(fullMessage(for: error))
            terminate(code == .validationFailure ? 2 : code.rawValue)
        }
    }
}

extension Edgectl {
    /// `edgectl --socket PATH status`, as kubectl users type global flags: ArgumentParser only knows options after the
    /// subcommand that declares them (every subcommand has GlobalOptions), so global options in front of the first
    /// subcommand word move behind the whole command line (in front of a `--`, which ends the options). A command line
    /// that starts with anything else, or has no subcommand after the global options (`edgectl --socket PATH` runs the
    /// default status as it is), is left alone, and so is a `--socket` missing its value (the parser says so).
    static func rewritingLeadingGlobalOptions(_ arguments: [String]) -> [String] {
        var globals: [String] = []
        var index = 0
        while index < arguments.count {
            let arg = arguments[index]
            if GlobalOptions.names.contains(where: { arg.hasPrefix("\($0)=") }) {
                globals.append(arg)
                index += 1
            } else if GlobalOptions.names.contains(arg), index + 1 < arguments.count, !arguments[index + 1].hasPrefix("-") {
                globals += [arg, arguments[index + 1]]
                index += 2
            } else {
                break
            }
        }
        guard !globals.isEmpty, index < arguments.count, !arguments[index].hasPrefix("-") else { return arguments }
        var rest = Array(arguments[index...])
        let end = rest.firstIndex(of: "--") ?? rest.endIndex
        rest.insert(contentsOf: globals, at: end)
        return rest
    }

    /// `edgectl join --autonomy` without a value means forever: ArgumentParser has no options with an optional value,
    /// so a bare `--autonomy` of the join subcommand becomes `--autonomy=0` before parsing, unless the next argument is
    /// its value (`--autonomy 72h`: join has no positional arguments, so a word that is not an option can only be
    /// that). Nothing after `--` is touched, nor any other subcommand.
    static func rewritingBareAutonomy(_ arguments: [String]) -> [String] {
        guard arguments.first == "join" else { return arguments }
        var out: [String] = []
        var index = 0
        while index < arguments.count {
            let arg = arguments[index]
            if arg == "--" { return out + arguments[index...] }
            if arg == "--autonomy" {
                let next = index + 1 < arguments.count ? arguments[index + 1] : nil
                if next == nil || next!.hasPrefix("-") {
                    out.append("--autonomy=\(JoinRequest.defaultAutonomy)")
                    index += 1
                    continue
                }
            }
            out.append(arg)
            index += 1
        }
        return out
    }
}

/// `--socket` (or $EDGED_SOCKET), shared by every subcommand.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("edged's control socket (default: $EDGED_SOCKET or /run/edged/edged.sock).",
                                            valueName: "path"))
    var socket: String?

    @Option(name: .long, help: ArgumentHelp("Seconds to wait for edged to start answering (join adds its approval timeout).",
                                            valueName: "seconds"))
    var requestTimeout: Int = 30

    /// The options that may also come before the subcommand.
    static let names = ["--socket", "--request-timeout"]

    func validate() throws {
        guard requestTimeout > 0 else { throw ValidationError("--request-timeout must be at least 1 (seconds)") }
    }

    var socketPath: String {
        if let socket, !socket.isEmpty { return socket }
        if let env = getenv("EDGED_SOCKET"), env.pointee != 0 { return String(cString: env) }
        return ControlServer.Configuration.defaultSocketPath
    }

    var client: ControlClient { ControlClient(socketPath: socketPath, answerTimeout: .seconds(requestTimeout)) }
}
