// Real network fixtures for the CNI tests: a temp dir with a conflist for its own bridge and subnet, real
// network namespaces, and clean-up of what the plugins leave behind.

import EdgedNetwork
import EdgedTestSupport
import Foundation
import Logging

/// Debian's containernetworking-plugins.
let pluginDir = "/usr/lib/cni"

var haveCNIPlugins: Bool {
    ["bridge", "host-local", "loopback", "portmap"].allSatisfy { FileManager.default.isExecutableFile(atPath: "\(pluginDir)/\($0)") }
}

/// Root and the plugins: the conditions for the tests that run real plugins.
var canRunCNI: Bool { isRoot && haveCNIPlugins }

let testLogger = Logger(label: "edged.network.tests")

/// A throwaway network: temp confDir (one conflist), cache dir, host-local data dir, a bridge of its own.
final class TestNetwork: @unchecked Sendable {
    let dir: TempDir
    let bridge: String
    let subnet: String
    var confDir: String { dir.sub("net.d") }
    var cacheDir: String { dir.sub("cache") }
    var ipamDir: String { dir.sub("ipam") }
    let name: String

    /// `octet` picks the subnet 10.250.<octet>.0/24; give each test its own.
    init(octet: Int, portmap: Bool = false, cniVersion: String = "1.0.0", extraPlugins: [String] = []) throws {
        dir = try TempDir("edged-cni")
        let tag = String(UInt32.random(in: 0..<UInt32.max), radix: 16)
        bridge = "edt\(tag)"
        subnet = "10.250.\(octet).0/24"
        name = "edged-test-\(tag)"
        TestBridges.removeLeftovers(holding: subnet)
        try FileManager.default.createDirectory(atPath: confDir, withIntermediateDirectories: true)
        var plugins = [
            """
            {"type":"bridge","bridge":"\(bridge)","isGateway":true,"ipMasq":false,"hairpinMode":true,
             "ipam":{"type":"host-local","dataDir":"\(ipamDir)","ranges":[[{"subnet":"\(subnet)"}]],"routes":[{"dst":"0.0.0.0/0"}]}}
            """,
            #"{"type":"loopback"}"#,
        ]
        if portmap { plugins.append(#"{"type":"portmap","capabilities":{"portMappings":true},"snat":true}"#) }
        plugins += extraPlugins
        try writeConfig("10-test.conflist", """
            {"cniVersion":"\(cniVersion)","name":"\(name)","plugins":[\(plugins.joined(separator: ","))]}
            """)
    }

    func writeConfig(_ file: String, _ text: String) throws {
        try text.write(toFile: "\(confDir)/\(file)", atomically: true, encoding: .utf8)
    }

    func podNetwork(binDirs: [String] = [pluginDir], timeout: Duration = .seconds(30), allowNoNetwork: Bool = true) -> PodNetwork {
        PodNetwork(config: PodNetworkConfig(confDir: confDir, binDirs: binDirs, cacheDir: cacheDir, pluginTimeout: timeout,
                                            allowNoNetwork: allowNoNetwork), logger: testLogger)
    }

    /// host-local's reservation file for an IP (exists while the IP is in use).
    func ipamFile(_ ip: String) -> String { "\(ipamDir)/\(name)/\(ip)" }

    var bridgeExists: Bool { FileManager.default.fileExists(atPath: "/sys/class/net/\(bridge)") }

    func remove() {
        _ = try? runCommand(["ip", "link", "del", bridge], check: false)
        dir.remove()
    }
}

/// A network namespace made with `ip netns add` (pinned at /run/netns/NAME).
final class TestNetns: @unchecked Sendable {
    let name: String
    var path: String { "/run/netns/\(name)" }

    init() throws {
        name = "edged-cni-\(String(UInt32.random(in: 0..<UInt32.max), radix: 16))"
        try runCommand(["ip", "netns", "add", name])
    }

    /// Runs a command inside the namespace.
    @discardableResult
    func exec(_ args: [String], check: Bool = true) throws -> CommandResult {
        try runCommand(["ip", "netns", "exec", name] + args, check: check)
    }

    /// One ping from inside the namespace; true when answered. The test runner's children may inherit a blocked
    /// SIGALRM, so busybox's own deadline cannot be trusted: `timeout -s KILL` bounds it.
    func ping(_ ip: String) throws -> Bool {
        try runCommand(["timeout", "-s", "KILL", "5", "ip", "netns", "exec", name, "/bin/busybox", "ping", "-c1", "-w2", ip],
                       check: false).status == 0
    }

    func remove() {
        _ = try? runCommand(["ip", "netns", "del", name], check: false)
    }
}

func uniquePodUID() -> String { UUID().uuidString.lowercased() }

/// The host-side veth of a pod's eth0 (its peer), found through the interface's iflink; nil when gone.
func hostVethExists(forNetns ns: TestNetns) throws -> Bool {
    let r = try ns.exec(["cat", "/sys/class/net/eth0/iflink"], check: false)
    guard r.status == 0, let index = Int(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) else { return false }
    let links = try runCommand(["ip", "-o", "link", "show"]).stdout
    return links.split(separator: "\n").contains { $0.hasPrefix("\(index): ") }
}

/// Removes portmap's shared chains once no rule of any network uses them (the per-pod chains go with DEL).
func removeIdleHostportChains() {
    guard let dnat = try? runCommand(["iptables", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT"], check: false),
          dnat.status == 0, !dnat.stdout.contains("-A CNI-HOSTPORT-DNAT") else { return }
    for (chain, rule) in [("PREROUTING", ["-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"]),
                          ("OUTPUT", ["-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"]),
                          ("POSTROUTING", ["-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", "CNI-HOSTPORT-MASQ"])] {
        _ = try? runCommand(["iptables", "-t", "nat", "-D", chain] + rule, check: false)
    }
    for c in ["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"] {
        _ = try? runCommand(["iptables", "-t", "nat", "-F", c], check: false)
        _ = try? runCommand(["iptables", "-t", "nat", "-X", c], check: false)
    }
}

/// Pids whose command line contains `text` (no procps needed).
func processes(commandLineContaining text: String) -> [Int32] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { Int32($0) }.filter { pid in
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        let cmd = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
        return cmd.contains(text)
    }
}
