// PodNetwork with Debian's real CNI plugins (bridge, host-local, loopback, portmap) on real network namespaces.
// Needs root; each test has its own bridge, subnet (10.250.N.0/24), cache and IPAM dirs.

import EdgedNetwork
import EdgedTestSupport
import Foundation
import Testing

@Suite(.enabled(if: canRunCNI, "needs root and containernetworking-plugins in /usr/lib/cni"))
struct PodNetworkTests {
    @Test func twoPodsReachEachOtherAndDelReleasesEverything() async throws {
        let net = try TestNetwork(octet: 11)
        let a = try TestNetns(), b = try TestNetns()
        defer { a.remove(); b.remove(); net.remove() }
        let network = net.podNetwork()
        let uidA = uniquePodUID(), uidB = uniquePodUID()

        let sa = try #require(try await network.setUp(podUID: uidA, namespace: "default", name: "a", netnsPath: a.path))
        let sb = try #require(try await network.setUp(podUID: uidB, namespace: "default", name: "b", netnsPath: b.path))
        #expect(sa.network == net.name)
        #expect(sa.configFile == "\(net.confDir)/10-test.conflist")
        #expect(sa.ips.count == 1 && sb.ips.count == 1)
        #expect(sa.ips[0].hasPrefix("10.250.11.") && sb.ips[0].hasPrefix("10.250.11.") && sa.ips != sb.ips)
        #expect(await network.status(podUID: uidA) == sa)
        #expect(await network.readiness() == .ready(network: net.name))
        #expect(FileManager.default.fileExists(atPath: "\(net.cacheDir)/\(uidA).json"))
        #expect(Set(await network.cachedPodUIDs()) == [uidA, uidB])

        // The address is really on the pod's eth0, lo is up (loopback plugin), and the pods reach each other.
        #expect(try a.exec(["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout.contains("\(sa.ips[0])/24"))
        #expect(try a.exec(["ip", "-o", "link", "show", "lo"]).stdout.contains("UP"))
        #expect(try a.ping(sb.ips[0]))
        #expect(try b.ping(sa.ips[0]))

        // A second setUp of a set-up pod answers from the cache: same IP, no second lease.
        #expect(try await network.setUp(podUID: uidA, namespace: "default", name: "a", netnsPath: a.path) == sa)
        try await network.check(podUID: uidA)

        // DEL: veth gone, IP released, cache entry gone; a second DEL is fine.
        #expect(FileManager.default.fileExists(atPath: net.ipamFile(sa.ips[0])))
        #expect(try hostVethExists(forNetns: a))
        try await network.tearDown(podUID: uidA)
        #expect(!FileManager.default.fileExists(atPath: net.ipamFile(sa.ips[0])))
        #expect(!(try hostVethExists(forNetns: a)))
        #expect(try a.exec(["ip", "link", "show", "eth0"], check: false).status != 0)
        #expect(!FileManager.default.fileExists(atPath: "\(net.cacheDir)/\(uidA).json"))
        #expect(await network.status(podUID: uidA) == nil)
        try await network.tearDown(podUID: uidA)
        #expect(!(try b.ping(sa.ips[0])))
        try await network.tearDown(podUID: uidB)
        #expect(!FileManager.default.fileExists(atPath: net.ipamFile(sb.ips[0])))
    }

    @Test func hostPortThroughPortmap() async throws {
        let net = try TestNetwork(octet: 12, portmap: true)
        let ns = try TestNetns()
        let uid = uniquePodUID()
        let network = net.podNetwork()
        defer {
            ns.remove()
            net.remove()
            removeIdleHostportChains()
        }
        let hostPort = Int.random(in: 20000..<30000)
        let status = try #require(try await network.setUp(podUID: uid, namespace: "web", name: "srv", netnsPath: ns.path,
                                                          portMappings: [PortMapping(hostPort: hostPort, containerPort: 8080, protocol: "TCP")]))
        do {
            try checkHostPort(ns: ns, bridge: net.bridge, podIP: status.ips[0], hostPort: hostPort, uid: uid)
        } catch {
            Issue.record(error)
        }
        // DEL removes this pod's DNAT rule (portmap's per-pod chain), whatever happened above.
        try await network.tearDown(podUID: uid)
        let after = try runCommand(["iptables", "-t", "nat", "-S"]).stdout
        #expect(!after.contains(uid))
        #expect(!after.contains("--dport \(hostPort) -j DNAT"))
    }

    /// A TCP server in the pod answers on 127.0.0.1:hostPort. This works here because portmap (snat on, the
    /// default) sets net.ipv4.conf.<bridge>.route_localnet=1 and masquerades the hairpin traffic (mark 0x2000),
    /// and iptables (the nft variant, which portmap calls) is usable as root; no host setting is needed.
    private func checkHostPort(ns: TestNetns, bridge: String, podIP: String, hostPort: Int, uid: String) throws {
        let nat = try runCommand(["iptables", "-t", "nat", "-S"]).stdout
        #expect(nat.contains("id: \\\"\(uid)\\\"") && nat.contains("--dport \(hostPort) -j DNAT --to-destination \(podIP):8080"), "nat table: \(nat)")
        let localnet = (procText("/proc/sys/net/ipv4/conf/\(bridge)/route_localnet") ?? "")
        #expect(localnet.hasPrefix("1"), "route_localnet of \(bridge) is \(localnet); \(TestBridges.diagnostics(for: podIP))")
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        server.arguments = ["netns", "exec", ns.name, "/bin/busybox", "nc", "-l", "-p", "8080", "-e", "/bin/echo", "hello-from-pod"]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        // SIGKILL: the test runner's children may ignore SIGTERM.
        defer {
            if server.isRunning { kill(server.processIdentifier, SIGKILL) }
            server.waitUntilExit()
        }
        var answer = ""
        for _ in 0..<50 where !answer.contains("hello-from-pod") {
            answer = try runCommand(["/bin/busybox", "nc", "-w", "2", "127.0.0.1", "\(hostPort)"], check: false).stdout
            if !answer.contains("hello-from-pod") { Thread.sleep(forTimeInterval: 0.1) }
        }
        #expect(answer.contains("hello-from-pod"), "no answer on 127.0.0.1:\(hostPort); \(TestBridges.diagnostics(for: podIP))")
    }

    @Test func delAfterRestartUsesTheCachedConfigEvenWithTheNetnsGone() async throws {
        let net = try TestNetwork(octet: 13, cniVersion: "0.4.0")
        let ns = try TestNetns()
        defer { ns.remove(); net.remove() }
        let uid = uniquePodUID()
        let first = try #require(try await net.podNetwork().setUp(podUID: uid, namespace: "default", name: "p", netnsPath: ns.path))
        #expect(FileManager.default.fileExists(atPath: net.ipamFile(first.ips[0])))

        // "edged restarts": a new PodNetwork; the config dir is emptied and the netns is gone.
        try FileManager.default.removeItem(atPath: "\(net.confDir)/10-test.conflist")
        ns.remove()
        let restarted = net.podNetwork()
        #expect(await restarted.status(podUID: uid) == first)
        #expect(await restarted.readiness() == .notReady(reason: "cni config uninitialized: no CNI network config in \(net.confDir): install a CNI plugin (e.g. flannel) or put a conflist there"))
        try await restarted.tearDown(podUID: uid)
        #expect(!FileManager.default.fileExists(atPath: net.ipamFile(first.ips[0])))
        #expect(await restarted.cachedPodUIDs().isEmpty)
    }

    @Test func checkFindsABrokenInterface() async throws {
        let net = try TestNetwork(octet: 14)
        let ns = try TestNetns()
        defer { ns.remove(); net.remove() }
        let network = net.podNetwork()
        let uid = uniquePodUID()
        await #expect(throws: NetworkError.self) { try await network.check(podUID: uid) }
        let s = try #require(try await network.setUp(podUID: uid, namespace: "default", name: "c", netnsPath: ns.path))
        try await network.check(podUID: uid)
        try ns.exec(["ip", "addr", "flush", "dev", "eth0"])
        do {
            try await network.check(podUID: uid)
            Issue.record("CHECK passed with eth0's address \(s.ips[0]) removed")
        } catch {
            #expect(error.code == .pluginFailed)
            #expect(error.plugin == "bridge")
            #expect(error.message.contains("CNI plugin bridge failed") && error.message.contains("CHECK for pod default/c"))
        }
        try await network.tearDown(podUID: uid)
    }

    @Test func missingPluginFailsAndRollsBack() async throws {
        let net = try TestNetwork(octet: 15, extraPlugins: [#"{"type":"edged-no-such-plugin"}"#])
        let ns = try TestNetns()
        defer { ns.remove(); net.remove() }
        let network = net.podNetwork()
        guard case .notReady(let reason) = await network.readiness() else {
            Issue.record("readiness should report the missing plugin")
            return
        }
        #expect(reason.contains("CNI plugin edged-no-such-plugin of network \(net.name)") && reason.contains("not found in /usr/lib/cni"))
        let uid = uniquePodUID()
        do {
            _ = try await network.setUp(podUID: uid, namespace: "default", name: "m", netnsPath: ns.path)
            Issue.record("setUp succeeded without the plugin")
        } catch {
            #expect(error.code == .pluginNotFound)
            #expect(error.plugin == "edged-no-such-plugin")
            #expect(error.message.contains("ADD for pod default/m"))
        }
        // The bridge's ADD was rolled back: no lease, no eth0, no cache entry.
        let leases = (try? FileManager.default.contentsOfDirectory(atPath: "\(net.ipamDir)/\(net.name)")) ?? []
        #expect(leases.filter { $0.hasPrefix("10.250.") }.isEmpty)
        #expect(try ns.exec(["ip", "link", "show", "eth0"], check: false).status != 0)
        #expect(await network.cachedPodUIDs().isEmpty)
    }

    @Test func pluginErrorResultIsReportedWithThePluginName() async throws {
        let net = try TestNetwork(octet: 16)
        let ns = try TestNetns()
        defer { ns.remove(); net.remove() }
        // host-local with a range outside its subnet: the plugin prints an error result.
        try FileManager.default.removeItem(atPath: "\(net.confDir)/10-test.conflist")
        try net.writeConfig("10-bad.conflist", """
            {"cniVersion":"1.0.0","name":"\(net.name)","plugins":[{"type":"bridge","bridge":"\(net.bridge)",
             "ipam":{"type":"host-local","dataDir":"\(net.ipamDir)","ranges":[[{"subnet":"10.250.16.0/24","rangeStart":"10.99.0.5"}]]}}]}
            """)
        let network = net.podNetwork()
        let uid = uniquePodUID()
        do {
            _ = try await network.setUp(podUID: uid, namespace: "default", name: "e", netnsPath: ns.path)
            Issue.record("setUp succeeded with a bad range")
        } catch {
            #expect(error.code == .pluginFailed)
            #expect(error.plugin == "bridge")
            #expect(error.message.contains("CNI plugin bridge failed: ") && error.message.contains("10.99.0.5"))
            #expect(error.message.contains("network \(net.name) in \(net.confDir)/10-bad.conflist"))
        }
        // The rollback DEL failed too (same bad range): the entry stays so that the pod's teardown tries again,
        // and that teardown reports the plugin's error.
        #expect(await network.cachedPodUIDs() == [uid])
        await #expect {
            try await network.tearDown(podUID: uid)
        } throws: { error in
            (error as? NetworkError)?.plugin == "bridge" && "\(error)".contains("DEL for pod default/e")
        }
    }

    @Test func slowPluginIsKilledAtTheTimeout() async throws {
        let net = try TestNetwork(octet: 17)
        let ns = try TestNetns()
        defer { ns.remove(); net.remove() }
        let bin = net.dir.sub("bin")
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        try "#!/bin/sh\nexec sleep 30\n".write(toFile: "\(bin)/edged-sleepy", atomically: true, encoding: .utf8)
        chmod("\(bin)/edged-sleepy", 0o755)
        try FileManager.default.removeItem(atPath: "\(net.confDir)/10-test.conflist")
        try net.writeConfig("10-sleepy.conflist", #"{"cniVersion":"1.0.0","name":"sleepy","plugins":[{"type":"edged-sleepy"}]}"#)
        let network = net.podNetwork(binDirs: [bin, pluginDir], timeout: .seconds(1))
        let began = ContinuousClock.now
        do {
            _ = try await network.setUp(podUID: uniquePodUID(), namespace: "default", name: "s", netnsPath: ns.path)
            Issue.record("setUp succeeded with a plugin that never answers")
        } catch {
            #expect(error.code == .timeout)
            #expect(error.plugin == "edged-sleepy")
            #expect(error.message.contains("did not finish within 1s and was killed"))
        }
        // ADD (1 s) plus its rollback DEL (1 s), not the plugin's 30 s.
        #expect(ContinuousClock.now - began < .seconds(10))
        #expect(processes(commandLineContaining: "\(bin)/edged-sleepy").isEmpty)
    }

    @Test func noConfigMeansLoOnlyOrNotReady() async throws {
        let net = try TestNetwork(octet: 18)
        let ns = try TestNetns()
        defer { ns.remove(); net.remove() }
        try FileManager.default.removeItem(atPath: "\(net.confDir)/10-test.conflist")
        let standalone = net.podNetwork()
        #expect(try await standalone.setUp(podUID: uniquePodUID(), namespace: "default", name: "n", netnsPath: ns.path) == nil)
        try await standalone.tearDown(podUID: uniquePodUID())
        let joined = net.podNetwork(allowNoNetwork: false)
        await #expect {
            _ = try await joined.setUp(podUID: uniquePodUID(), namespace: "default", name: "n", netnsPath: ns.path)
        } throws: { error in
            (error as? NetworkError)?.code == .notReady && "\(error)".contains("no CNI network config in \(net.confDir)")
        }
    }

    @Test func pluginVersions() async throws {
        let net = try TestNetwork(octet: 19)
        defer { net.remove() }
        let versions = try await net.podNetwork().supportedVersions(pluginType: "bridge")
        #expect(versions.contains("1.0.0") && versions.contains("0.4.0"))
        await #expect(throws: NetworkError.self) { _ = try await net.podNetwork().supportedVersions(pluginType: "edged-absent") }
    }
}
