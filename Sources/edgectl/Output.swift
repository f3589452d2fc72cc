// Writing to the terminal: colours only for a tty without NO_COLOR, tables, sizes and durations.

import EdgedControl
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

enum Output {
    /// Writes to stdout in one go (no buffering surprises when piped).
    static func out(_ text: String) {
        write(1, text)
    }

    static func error(_ message: String) {
        write(2, "edgectl: \(message)\n")
    }

    static func write(_ fd: Int32, _ text: String) {
        writeBytes(fd, Array(text.utf8))
    }

    static func writeBytes(_ fd: Int32, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buf in
            var done = 0
            while done < buf.count {
                let n = systemWrite(fd, buf.baseAddress! + done, buf.count - done)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                done += n
            }
        }
    }

    /// Escape codes only when stdout is a terminal, NO_COLOR is unset (https://no-color.org) and TERM is not dumb.
    static let useColor: Bool = {
        if let noColor = getenv("NO_COLOR"), noColor.pointee != 0 { return false }
        if let term = getenv("TERM"), String(cString: term) == "dumb" { return false }
        return isatty(1) == 1
    }()

    static func color(_ text: String, _ code: String) -> String {
        useColor ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text
    }
    static func red(_ s: String) -> String { color(s, "1;31") }
    static func green(_ s: String) -> String { color(s, "1;32") }
    static func yellow(_ s: String) -> String { color(s, "33") }
    static func bold(_ s: String) -> String { color(s, "1") }

    /// Left-aligned columns separated by three spaces, like kubectl.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for row in rows {
            for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            var out = ""
            for (i, cell) in cells.enumerated() {
                out += i == cells.count - 1 ? cell : cell + String(repeating: " ", count: widths[i] - cell.count + 3)
            }
            return out + "\n"
        }
        return line(header) + rows.map(line).joined()
    }

    /// 1536 → "1.5 KiB".
    static func bytes(_ n: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(n)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(n) B" }
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) \(units[unit])"
    }

    /// 3725 → "1h2m", like kubectl's ages.
    static func duration(_ seconds: Int64) -> String {
        let s = max(seconds, 0)
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m\(s % 60 == 0 ? "" : "\(s % 60)s")" }
        if s < 86400 { return "\(s / 3600)h\((s % 3600) / 60 == 0 ? "" : "\((s % 3600) / 60)m")" }
        return "\(s / 86400)d\((s % 86400) / 3600 == 0 ? "" : "\((s % 86400) / 3600)h")"
    }
}

/// How kubectl would describe a pod: READY n/m and one STATUS word.
enum PodDisplay {
    static func ready(_ pod: PodSummary) -> String {
        let main = pod.containers.filter { !$0.isInit }
        return "\(main.filter(\.ready).count)/\(main.count)"
    }

    static func status(_ pod: PodSummary) -> String {
        let inits = pod.containers.filter(\.isInit)
        let main = pod.containers.filter { !$0.isInit }
        if let reason = pod.reason, !reason.isEmpty { return reason }
        // An init container still working or failing.
        for (index, c) in inits.enumerated() {
            if c.state == "terminated" && c.exitCode == 0 { continue }
            if let reason = c.reason, c.state != "running" { return "Init:\(reason)" }
            return "Init:\(index)/\(inits.count)"
        }
        // kubectl shows the reason of the last container with one.
        var status = pod.phase
        for c in main {
            if c.state == "waiting", let reason = c.reason, !reason.isEmpty {
                status = reason
            } else if c.state == "terminated" {
                status = c.reason ?? ((c.exitCode ?? 0) == 0 ? "Completed" : "Error")
            }
        }
        if status == "Pending" && main.contains(where: { $0.state == "waiting" && $0.reason == nil }) { return "ContainerCreating" }
        if status == "Succeeded" { return "Completed" }
        if status == "Failed" { return "Error" }
        return status
    }

    static func isBad(_ status: String) -> Bool {
        !["Running", "Completed", "ContainerCreating", "Pending"].contains(status) && !status.hasPrefix("Init:0") && !status.hasPrefix("Init:1")
    }
}

private func systemWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int { write(fd, p, n) }
