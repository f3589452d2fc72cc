// Node and process figures for `edgectl status`, read from /proc and statvfs.

import EdgedControl
import EdgedCore
import Glibc

enum HostStats {
    static func node(stateDir: String) -> NodeStats {
        let mem = Files.meminfo()
        let disk = Files.diskSpace(stateDir)
        var load = [Double](repeating: 0, count: 3)
        getloadavg(&load, 3)
        return NodeStats(memoryTotalBytes: mem["MemTotal"] ?? 0, memoryAvailableBytes: mem["MemAvailable"] ?? 0,
                         diskTotalBytes: disk.total, diskFreeBytes: disk.free, load1: load[0])
    }

    static func threads() -> Int {
        for line in (Files.readText("/proc/self/status") ?? "").split(separator: "\n") where line.hasPrefix("Threads:") {
            return Int(line.split(separator: "\t").last.map(String.init)?.trimmingCharacters() ?? "") ?? 0
        }
        return 0
    }

    static func openFiles() -> Int {
        guard let dir = opendir("/proc/self/fd") else { return 0 }
        defer { closedir(dir) }
        var n = -2
        while readdir(dir) != nil { n += 1 }
        return max(n, 0)
    }
}

extension String {
    func trimmingCharacters() -> String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" || $0 == "\n" }.reversed())
    }
}
