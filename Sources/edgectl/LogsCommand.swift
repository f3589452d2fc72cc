// `edgectl logs POD`: a container's log, like `kubectl logs`; `edgectl logs --daemon`: edged's own log from the journal.

import ArgumentParser
import EdgedControl
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs",
        abstract: "Print a container's log, or edged's own log (--daemon).",
        discussion: """
            POD is NAME or NAMESPACE/NAME. Without -c, the pod's only (or first) container. \
            --daemon prints edged's log from the systemd journal (like journalctl -u edged), with -f, --tail and \
            --since-seconds; it works while edged is stopped too.
            """)

    @Argument(help: "The pod: NAME or NAMESPACE/NAME.")
    var pod: String?

    @Flag(name: .long, help: "edged's own log from the journal instead of a container's.")
    var daemon = false

    @Option(name: [.short, .customLong("namespace")], help: "The pod's namespace (default: default).")
    var namespace: String?

    @Option(name: [.short, .customLong("container")], help: "The container.")
    var container: String?

    @Flag(name: [.short, .customLong("follow")], help: "Keep printing new lines (Ctrl-C to stop).")
    var follow = false

    @Option(name: .long, help: "Only the last N lines.")
    var tail: Int?

    @Flag(name: [.short, .customLong("previous")], help: "The previous, terminated instance of the container.")
    var previous = false

    @Flag(name: .long, help: "Prefix each line with its time (RFC3339Nano).")
    var timestamps = false

    @Option(name: .long, help: "Only lines newer than this many seconds.")
    var sinceSeconds: Int64?

    @Option(name: .long, help: "Stop after this many bytes.")
    var limitBytes: Int?

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if let tail, tail < 0 { throw ValidationError("--tail must be 0 or more") }
        if daemon {
            if let pod { throw ValidationError("--daemon prints edged's own log: leave out the pod (\(pod))") }
            for (set, flag) in [(namespace != nil, "-n"), (container != nil, "-c"), (previous, "--previous"),
                                (timestamps, "--timestamps"), (limitBytes != nil, "--limit-bytes")] where set {
                throw ValidationError("\(flag) is for container logs, not with --daemon")
            }
            return
        }
        guard let pod else { throw ValidationError("Missing expected argument '<pod>' (or --daemon for edged's own log)") }
        if pod.split(separator: "/", omittingEmptySubsequences: false).count > 2 || pod.hasPrefix("/") || pod.hasSuffix("/") {
            throw ValidationError("POD must be NAME or NAMESPACE/NAME, not \"\(pod)\"")
        }
        if pod.contains("/"), let namespace, namespace != String(pod.split(separator: "/")[0]) {
            throw ValidationError("the namespace is given twice: \(pod) and -n \(namespace)")
        }
    }

    var request: LogRequest {
        let pod = self.pod ?? ""
        let parts = pod.split(separator: "/").map(String.init)
        let (ns, name) = parts.count == 2 ? (parts[0], parts[1]) : (namespace ?? "default", parts[0])
        return LogRequest(namespace: ns, pod: name, container: container, tail: tail, follow: follow, previous: previous,
                          timestamps: timestamps, sinceSeconds: sinceSeconds, limitBytes: limitBytes)
    }

    func run() async throws {
        if daemon {
            try runDaemon()
            return
        }
        try await global.client.logs(request) { bytes in
            Output.writeBytes(1, bytes)
        }
    }
}

extension LogsCommand {
    /// `edgectl logs --daemon`: without a journal, says where edged's log is instead (exit 1).
    func runDaemon() throws {
        let journal: DaemonJournal
        do {
            journal = try DaemonJournal()
        } catch {
            Output.error("""
                cannot read edged's log from the journal: \(error). \
                edged logs to the journal only when systemd runs it (systemctl start edged); \
                edged started by hand logs to the terminal (stderr) it was started from.
                """)
            throw ExitCode(1)
        }
        // Like journalctl -f: the last 10 entries, then new ones.
        let tail = self.tail ?? (follow ? 10 : nil)
        let since = sinceSeconds.map { DaemonLogFormat.nowMicroseconds() - UInt64(max($0, 0)) * 1_000_000 }
        var printed = 0
        journal.read(tail: tail, since: since, follow: follow) { entry in
            Output.out(DaemonLogFormat.line(entry))
            printed += 1
        }
        if printed == 0 && !follow {
            Output.error("the journal has no entries of edged (SYSLOG_IDENTIFIER=edged or unit edged.service)\(since != nil ? " in that time" : ""): is edged installed as edged.service?")
        }
    }
}
