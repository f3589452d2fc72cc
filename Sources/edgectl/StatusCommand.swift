// `edgectl status`: the one screen a field technician reads first.

import ArgumentParser
import EdgedControl
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show whether the node is healthy, and if not, why and what to do.",
        discussion: "Exit code 0 healthy, 1 degraded (the reasons also go to stderr), 2 edged not running or unreachable.")

    @Flag(name: .long, help: "Print the status report as JSON (for scripts).")
    var json = false

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let report: StatusReport
        do {
            report = try await global.client.status()
        } catch let error as ControlClientError where error.kind == .notRunning {
            // edged is down: what it said last is the first clue.
            if let warnings = JournalWarnings.read(), !warnings.isEmpty, !json {
                Output.write(2, JournalWarnings.render(warnings))
            }
            throw error
        }
        let warnings = JournalWarnings.read()
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let output = StatusOutput(report: report, journalWarnings: warnings?.map(JournalWarning.init))
            Output.out(String(decoding: try encoder.encode(output), as: UTF8.self) + "\n")
        } else {
            Output.out(StatusScreen.render(report))
            if let warnings, !warnings.isEmpty { Output.out("\n" + JournalWarnings.render(warnings)) }
        }
        if !report.healthy {
            for reason in report.reasons { Output.write(2, "DEGRADED: \(reason)\n") }
            if report.reasons.isEmpty { Output.write(2, "DEGRADED\n") }
            throw ExitCode(1)
        }
    }
}

enum StatusScreen {
    /// "hub connected · last sync 2s ago · 310 objects cached (1.2 MB) · 0 writes queued".
    static func hubLine(_ h: HubReport) -> String {
        let sync = h.lastSyncAgeSeconds.map { "last sync \(Output.duration($0)) ago" } ?? "never synced"
        let cache = "\(h.cachedObjects) object\(h.cachedObjects == 1 ? "" : "s") cached (\(Output.bytes(h.storeBytes)))"
        var queued = "\(h.queuedWrites) write\(h.queuedWrites == 1 ? "" : "s") queued"
        if let https = h.listening.first(where: { $0.hasPrefix("https ") }) {
            // Where the HTTPS address lives: lo is the fallback where the kernel has no dummy driver.
            switch h.httpsInterface {
            case "lo": queued += " · \(https) (on lo: no dummy driver)"
            case let name?: queued += " · \(https) (on \(name))"
            case nil: queued += " · \(https)"
            }
        }
        switch h.cloud {
        case "offline":
            return "hub \(Output.red("OFFLINE")) since \(h.since) · \(sync) · serving \(cache) · \(queued)\n"
        case "starting":
            return "hub starting (cloud not probed yet) · \(cache) · \(queued)\n"
        default:
            return "hub connected · \(sync) · \(cache) · \(queued)\n"
        }
    }

    /// "Autonomy:  on, forever (node.openyurt.io/autonomy-duration=0): the cloud keeps this node's pods ...".
    static func autonomyLine(_ a: AutonomyReport, nodeName: String) -> String {
        a.line(nodeName: nodeName) + "\n"
    }

    /// "kubelet API 0.0.0.0:10250 · tunnel 1/1 server(s) at cloud.example:8132 · 2 streams".
    static func remoteAccessLine(_ k: KubeletAPIReport?, _ t: TunnelReport?) -> String {
        guard k != nil || t != nil else { return "" }
        var parts: [String] = []
        if let k {
            if let l = k.listening { parts.append("kubelet API \(l)\(k.servingNote.map { " (\($0))" } ?? "")") }
            else { parts.append("kubelet API \(Output.red("not serving"))\(k.problem.map { ": \($0)" } ?? "")") }
        }
        if let t {
            let up = t.connectedServers > 0
            let text = "tunnel \(t.connectedServers)/\(t.serverCount) server\(t.serverCount == 1 ? "" : "s") at \(t.server)"
            parts.append((up ? text : Output.red("tunnel DOWN") + " (\(t.server))") + " · \(t.openStreams) stream\(t.openStreams == 1 ? "" : "s")")
        }
        return parts.joined(separator: " · ") + "\n"
    }

    static func render(_ r: StatusReport) -> String {
        var out = ""
        if r.healthy {
            out += "\(Output.green("HEALTHY"))  all \(r.pods.count) pod\(r.pods.count == 1 ? "" : "s") fine\n"
        } else {
            let n = r.reasons.count
            out += "\(Output.red("DEGRADED"))  \(n) problem\(n == 1 ? "" : "s") need\(n == 1 ? "s" : "") attention:\n"
            for reason in r.reasons { out += "  - \(reason)\n" }
        }
        out += "edged \(r.version) (pid \(r.pid)) · mode \(r.mode) · node \(r.nodeName) · up \(Output.duration(r.uptimeSeconds))\n"
        if let c = r.cluster {
            let lease = c.leaseAgeSeconds.map { "lease renewed \(Output.duration($0)) ago" } ?? "lease not renewed yet"
            out += "cluster \(c.server) · \(c.registered ? "registered" : "not registered") · \(lease) · \(c.apiPods) API pod\(c.apiPods == 1 ? "" : "s")"
            if let until = c.certificateNotAfter { out += " · cert until \(until)" }
            out += "\n"
            if let e = c.lastError { out += "  last API error: \(e)\n" }
            if let a = c.autonomy { out += autonomyLine(a, nodeName: r.nodeName) }
            if let h = c.hub { out += hubLine(h) }
            out += remoteAccessLine(c.kubeletAPI, c.tunnel)
        }
        out += "\n"
        if r.pods.isEmpty {
            out += "PODS  none (put manifests in \(r.manifestDir))\n"
        } else {
            let rows = r.pods.map { p -> [String] in
                let status = PodDisplay.status(p)
                let shown = PodDisplay.isBad(status) ? Output.red(status) : status
                return ["\(p.namespace)/\(p.name)", PodDisplay.ready(p), shown, String(p.restarts)]
            }
            out += Output.table(["NAMESPACE/NAME", "READY", "STATUS", "RESTARTS"], rows)
        }
        out += "\n"
        let total = r.images.reduce(Int64(0)) { $0 + $1.size }
        let inUse = r.images.filter(\.inUse).count
        out += "IMAGES  \(r.images.count) image\(r.images.count == 1 ? "" : "s"), \(Output.bytes(total)) (\(inUse) in use)\n"
        let n = r.node
        out += "NODE    memory \(Output.bytes(n.memoryAvailableBytes)) free of \(Output.bytes(n.memoryTotalBytes))"
        out += " · disk \(Output.bytes(n.diskFreeBytes)) free of \(Output.bytes(n.diskTotalBytes)) (\(r.stateDir))"
        out += " · load \(formatLoad(n.load1))\n"
        let d = r.daemon
        out += "EDGED   RSS \(Output.bytes(d.rssBytes)) + \(Output.bytes(d.monitorsRSSBytes)) monitors"
        out += " · \(d.threads) threads · \(d.openFiles) open files\n"
        if !r.lastErrors.isEmpty {
            out += "\nLAST ERRORS (newest first)\n"
            for e in r.lastErrors.suffix(5).reversed() {
                out += "  \(e.time)  \(e.subject): \(e.message)\n"
            }
        }
        return out
    }

    static func formatLoad(_ v: Double) -> String {
        let hundredths = Int((v * 100).rounded())
        let frac = hundredths % 100
        return "\(hundredths / 100).\(frac < 10 ? "0" : "")\(frac)"
    }
}

/// `--json`: the report's own keys plus `journalWarnings` (absent when no journal is readable).
struct StatusOutput: Encodable {
    var report: StatusReport
    var journalWarnings: [JournalWarning]?

    enum CodingKeys: String, CodingKey { case journalWarnings }

    func encode(to encoder: any Encoder) throws {
        try report.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(journalWarnings, forKey: .journalWarnings)
    }
}

/// One of edged's recent warnings or errors, as `--json` shows it.
struct JournalWarning: Encodable, Equatable {
    var ageSeconds: Int64
    /// Seconds since the epoch.
    var time: Int64
    var priority: Int
    var level: String
    var message: String
    var pod: String?
    var container: String?
    var image: String?

    init(_ e: DaemonLogEntry) {
        ageSeconds = DaemonLogFormat.ageSeconds(e)
        time = Int64(e.timeMicroseconds / 1_000_000)
        priority = e.priority
        level = DaemonLogFormat.level(e.priority)
        message = e.message
        pod = e.pod
        container = e.container
        image = e.image
    }
}

/// edged's three most recent warnings/errors from the journal, for `edgectl status`.
enum JournalWarnings {
    /// Newest first; nil when no journal is readable (edged run by hand, no journald, not root).
    static func read(count: Int = 3) -> [DaemonLogEntry]? {
        guard let journal = try? DaemonJournal() else { return nil }
        return journal.recentWarnings(count: count)
    }

    /// "JOURNAL  edged's last warnings (edgectl logs --daemon)" and one line each: age, level, message.
    static func render(_ entries: [DaemonLogEntry]) -> String {
        var out = "JOURNAL  edged's last warnings and errors (all: edgectl logs --daemon)\n"
        for e in entries {
            let level = DaemonLogFormat.level(e.priority)
            let shown = e.priority <= 3 ? Output.red(level) : Output.yellow(level)
            var line = "  \(Output.duration(DaemonLogFormat.ageSeconds(e))) ago  \(shown)  \(e.message)"
            if let pod = e.pod { line += " (pod \(pod))" }
            out += line.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\n    ") + "\n"
        }
        return out
    }
}
