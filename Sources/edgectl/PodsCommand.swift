// `edgectl pods`: the pods on this node, like `kubectl get pods`.

import ArgumentParser
import EdgedControl
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

struct PodsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pods",
        abstract: "List the pods on this node.")

    @Flag(name: .long, help: "Print the pods as JSON.")
    var json = false

    @Option(name: [.short, .customLong("output")], help: "wide: add each container's state, exit code and pod IP.")
    var output: String?

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        if let output, output != "wide", output != "json" {
            throw ValidationError("unknown output format \"\(output)\" (use wide or json)")
        }
    }

    func run() async throws {
        let pods = try await global.client.pods()
        if json || output == "json" {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            Output.out(String(decoding: try encoder.encode(pods), as: UTF8.self) + "\n")
            return
        }
        if pods.isEmpty {
            Output.out("No pods on this node.\n")
            return
        }
        Output.out(PodsTable.render(pods, wide: output == "wide"))
    }
}

enum PodsTable {
    static func render(_ pods: [PodSummary], wide: Bool) -> String {
        var header = ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS"]
        if wide { header += ["IP", "CONTAINERS"] }
        let rows = pods.map { p -> [String] in
            var row = [p.namespace, p.name, PodDisplay.ready(p), PodDisplay.status(p), String(p.restarts)]
            if wide {
                row.append(p.podIP ?? "<none>")
                row.append(p.containers.map(container).joined(separator: ","))
            }
            return row
        }
        return Output.table(header, rows)
    }

    /// "main:running", "app:terminated(1,Error)", "init:waiting(CrashLoopBackOff)".
    static func container(_ c: ContainerSummary) -> String {
        var detail: [String] = []
        if let code = c.exitCode { detail.append(String(code)) }
        if let reason = c.reason { detail.append(reason) }
        return "\(c.isInit ? "init:" : "")\(c.name):\(c.state)" + (detail.isEmpty ? "" : "(\(detail.joined(separator: ",")))")
    }
}
