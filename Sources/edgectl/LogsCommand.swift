// `edgectl logs POD`: a container's log, like `kubectl logs`.

import ArgumentParser
import EdgedControl

struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs",
        abstract: "Print a container's log.",
        discussion: "POD is NAME or NAMESPACE/NAME. Without -c, the pod's only (or first) container.")

    @Argument(help: "The pod: NAME or NAMESPACE/NAME.")
    var pod: String

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
        if pod.split(separator: "/", omittingEmptySubsequences: false).count > 2 || pod.hasPrefix("/") || pod.hasSuffix("/") {
            throw ValidationError("POD must be NAME or NAMESPACE/NAME, not \"\(pod)\"")
        }
        if pod.contains("/"), let namespace, namespace != String(pod.split(separator: "/")[0]) {
            throw ValidationError("the namespace is given twice: \(pod) and -n \(namespace)")
        }
    }

    var request: LogRequest {
        let parts = pod.split(separator: "/").map(String.init)
        let (ns, name) = parts.count == 2 ? (parts[0], parts[1]) : (namespace ?? "default", parts[0])
        return LogRequest(namespace: ns, pod: name, container: container, tail: tail, follow: follow, previous: previous,
                          timestamps: timestamps, sinceSeconds: sinceSeconds, limitBytes: limitBytes)
    }

    func run() async throws {
        try await global.client.logs(request) { bytes in
            Output.writeBytes(1, bytes)
        }
    }
}
