import EdgedSystemd
import Foundation
import Testing

@Suite struct SystemdNotifierTests {
    @Test func noSocketMeansNoOp() throws {
        let notifier = try SystemdNotifier(environment: [:])
        #expect(!notifier.isEnabled)
        #expect(notifier.watchdogInterval == nil)
        try notifier.ready(status: "up")  // does nothing, does not throw
    }

    @Test func readyStatusStoppingAndMainPIDArrive() throws {
        let receiver = try DatagramReceiver()
        let notifier = try SystemdNotifier(environment: ["NOTIFY_SOCKET": receiver.path])
        #expect(notifier.isEnabled)
        try notifier.ready(status: "running 3 pods\nsecond line")
        #expect(receiver.receiveText() == "READY=1\nSTATUS=running 3 pods second line")
        try notifier.status("pulling busybox")
        #expect(receiver.receiveText() == "STATUS=pulling busybox")
        try notifier.mainPID(4242)
        #expect(receiver.receiveText() == "MAINPID=4242")
        try notifier.stopping()
        #expect(receiver.receiveText() == "STOPPING=1")
        try notifier.watchdog()
        #expect(receiver.receiveText() == "WATCHDOG=1")
    }

    @Test func abstractSocketName() throws {
        let name = "edged-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes: [UInt8] = [0] + Array(name.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        let len = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        #expect(rc == 0)
        let notifier = try SystemdNotifier(environment: ["NOTIFY_SOCKET": "@" + name])
        try notifier.ready()
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        #expect(poll(&pfd, 1, 2000) == 1)
        var buf = [UInt8](repeating: 0, count: 100)
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        #expect(String(decoding: buf[0..<max(n, 0)], as: UTF8.self) == "READY=1")
    }

    @Test func sendingToAMissingSocketThrowsNamingIt() throws {
        let notifier = try SystemdNotifier(environment: ["NOTIFY_SOCKET": "/tmp/edged-no-such-dir-\(getpid())/notify.sock"])
        #expect(throws: SystemdSocketError.self) { try notifier.ready() }
        do { try notifier.ready() } catch { #expect(error.description.contains("edged-no-such-dir")) }
    }

    @Test func watchdogEnvironment() throws {
        let mine = try SystemdNotifier(environment: ["NOTIFY_SOCKET": "/tmp/x.sock", "WATCHDOG_USEC": "30000000",
                                                     "WATCHDOG_PID": String(getpid())])
        #expect(mine.watchdogInterval == .seconds(30))
        let other = try SystemdNotifier(environment: ["NOTIFY_SOCKET": "/tmp/x.sock", "WATCHDOG_USEC": "30000000",
                                                      "WATCHDOG_PID": "1"])
        #expect(other.watchdogInterval == nil)
        let noPid = try SystemdNotifier(environment: ["NOTIFY_SOCKET": "/tmp/x.sock", "WATCHDOG_USEC": "2000000"])
        #expect(noPid.watchdogInterval == .seconds(2))
        let bad = try SystemdNotifier(environment: ["NOTIFY_SOCKET": "/tmp/x.sock", "WATCHDOG_USEC": "soon"])
        #expect(bad.watchdogInterval == nil)
    }

    @Test func watchdogPingsAtHalfTheInterval() async throws {
        let receiver = try DatagramReceiver()
        // WatchdogSec=400ms → a ping every 200 ms.
        let notifier = try SystemdNotifier(environment: ["NOTIFY_SOCKET": receiver.path, "WATCHDOG_USEC": "400000"])
        let watchdog = SystemdWatchdog(notifier: notifier)
        #expect(watchdog.period == .milliseconds(200))
        let task = Task { try await watchdog.run() }
        let start = ContinuousClock.now
        var times: [Duration] = []
        for _ in 0..<5 {
            #expect(await receiver.receiveTextAsync(timeoutMs: 3000) == "WATCHDOG=1")
            times.append(ContinuousClock.now - start)
        }
        task.cancel()
        _ = try? await task.value
        // 5 pings: at 0, 200, 400, 600, 800 ms. Never faster; slower only when parallel tests load the 2-core machine
        // (the pinger shares the cooperative pool), so the upper bound is loose.
        let span = times[4] - times[0]
        #expect(span >= .milliseconds(700) && span <= .milliseconds(5000), "pings spanned \(span)")
        // After cancellation no more pings arrive.
        while await receiver.receiveTextAsync(timeoutMs: 50) != nil {}
        #expect(await receiver.receiveTextAsync(timeoutMs: 500) == nil)
    }

    @Test func disabledWatchdogWaitsForCancellation() async throws {
        let watchdog = SystemdWatchdog(notifier: try SystemdNotifier(environment: [:]))
        let task = Task { try await watchdog.run() }
        try await Task.sleep(for: .milliseconds(100))
        task.cancel()
        _ = try? await task.value  // returns promptly once cancelled
    }
}
