// Host routing state for the tests that run real CNI bridges: each test gives its bridge a subnet of its own, so a
// bridge left behind by a killed test run (its process never reached its clean-up) holds the same subnet, and the
// host then routes the test's pod IPs to the dead bridge: portmap sets route_localnet on the wrong interface and
// replies to a pod never reach it. Seen on this machine after crashed runs (two bridges per subnet).

import Foundation

public enum TestBridges {
    /// Deletes every test bridge (named `edt…`/`edc…`, as the fixtures name theirs) that holds `subnet` and has no
    /// port, i.e. one a dead test left behind (no two tests share a subnet, so a live test's bridge never holds
    /// another's); returns their names, and says so in the test output.
    @discardableResult
    public static func removeLeftovers(holding subnet: String, except keep: String? = nil) -> [String] {
        guard let routes = try? runCommand(["ip", "-o", "route", "show", "exact", subnet], check: false).stdout else { return [] }
        var removed: [String] = []
        for line in routes.split(separator: "\n") {
            let words = line.split(separator: " ").map(String.init)
            guard let i = words.firstIndex(of: "dev"), i + 1 < words.count else { continue }
            let dev = words[i + 1]
            guard dev != keep, dev.hasPrefix("edt") || dev.hasPrefix("edc") else { continue }
            let ports = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/net/\(dev)/brif")) ?? []
            guard ports.isEmpty else { continue }
            if (try? runCommand(["ip", "link", "del", dev], check: false))?.status == 0 { removed.append(dev) }
        }
        if !removed.isEmpty {
            print("removed bridge(s) \(removed.joined(separator: ", ")) left by an earlier, killed test run: they held \(subnet)")
        }
        return removed
    }

    /// What the host would do with traffic to `ip`, for a failure message: the route it takes, every route to the
    /// same /24, the bridges' route_localnet, and the iptables policies.
    public static func diagnostics(for ip: String) -> String {
        func run(_ argv: [String]) -> String {
            let r = try? runCommand(argv, check: false)
            return "$ \(argv.joined(separator: " "))\n\(r?.stdout ?? "")\(r?.stderr ?? "")"
        }
        let net = ip.split(separator: ".").prefix(3).joined(separator: ".") + ".0/24"
        return [run(["ip", "route", "get", ip]), run(["ip", "-o", "route", "show", "to", "match", ip]),
                run(["ip", "-o", "route", "show", "exact", net]), run(["sysctl", "-a", "--pattern", "route_localnet"]),
                run(["iptables", "-S"]).split(separator: "\n").filter { $0.hasPrefix("-P") || $0.hasPrefix("$") }.joined(separator: "\n")]
            .joined(separator: "\n")
    }
}
