import EdgedSystemd
import Foundation
import Testing

/// sd_notify and sd_watchdog_enabled read the process environment: serialized, each test sets what it needs.
@Suite(.serialized) struct SystemdNotifierTests {
    static let cleared: [String: String?] = ["NOTIFY_SOCKET": nil, "WATCHDOG_USEC": nil, "WATCHDOG_PID": nil]

    @Test func noSocketMeansNoOp() throws {
        try withEnvironment(Self.cleared) {
            let notifier = SystemdNotifier()
            #expect(!notifier.isEnabled)
            #expect(notifier.socketPath == nil)
            #expect(notifier.watchdogInterval == nil)
            try notifier.ready(status: "up")  // does nothing, does not throw
        }
    }

    @Test func readyStatusStoppingAndMainPIDArrive() throws {
        let receiver = try DatagramReceiver()
        try withEnvironment(["NOTIFY_SOCKET": receiver.path]) {
            let notifier = SystemdNotifier()
            #expect(notifier.isEnabled)
            #expect(notifier.socketPath == receiver.path)
            try notifier.ready(status: "running 3 pods\nsecond line")
            #expect(receiver.receiveText() == "READY=1\nSTATUS=running 3 pods second line")
            try notifier.status("pulling busybox")
            #expect(receiver.receiveText() == "STATUS=pulling busybox")
            try notifier.mainPID(4242)
            #expect(receiver.receiveText() == "MAINPID=4242")
            try notifier.stopping(status: "exiting; pods keep running")
            #expect(receiver.receiveText() == "STOPPING=1\nSTATUS=exiting; pods keep running")
            try notifier.watchdog()
            #expect(receiver.receiveText() == "WATCHDOG=1")
        }
    }

    @Test func abstractSocketName() throws {
        let receiver = try DatagramReceiver(abstract: "edged-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try withEnvironment(["NOTIFY_SOCKET": receiver.path]) {
            try SystemdNotifier().ready()
            #expect(receiver.receiveText() == "READY=1")
        }
    }

    @Test func sendingToAMissingSocketThrowsNamingIt() throws {
        let missing = "/tmp/edged-no-such-dir-\(getpid())/notify.sock"
        try withEnvironment(["NOTIFY_SOCKET": missing]) {
            let notifier = SystemdNotifier()
            #expect(throws: SystemdError.self) { try notifier.ready() }
            do {
                try notifier.ready()
            } catch {
                #expect(String(describing: error) == "sd_notify to \(missing): No such file or directory")
            }
        }
    }

    /// sd_watchdog_enabled: WATCHDOG_USEC, and WATCHDOG_PID naming this process or absent.
    @Test func watchdogEnvironment() {
        withEnvironment(["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": String(getpid())]) {
            #expect(SystemdNotifier().watchdogInterval == .seconds(30))
        }
        withEnvironment(["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"]) {
            #expect(SystemdNotifier().watchdogInterval == nil, "WATCHDOG_PID names another process")
        }
        withEnvironment(["WATCHDOG_USEC": "2000000", "WATCHDOG_PID": nil]) {
            #expect(SystemdNotifier().watchdogInterval == .seconds(2))
        }
        withEnvironment(["WATCHDOG_USEC": "soon", "WATCHDOG_PID": nil]) {
            #expect(SystemdNotifier().watchdogInterval == nil)
        }
        withEnvironment(Self.cleared) {
            #expect(SystemdNotifier().watchdogInterval == nil)
        }
    }

    @Test func watchdogPingsAtHalfTheInterval() async throws {
        let receiver = try DatagramReceiver()
        // WatchdogSec=400ms → a ping every 200 ms. The notifier reads the environment when made, sd_notify at each
        // ping: the variables stay set until the pinger is cancelled.
        setenv("NOTIFY_SOCKET", receiver.path, 1)
        setenv("WATCHDOG_USEC", "400000", 1)
        unsetenv("WATCHDOG_PID")
        defer {
            unsetenv("NOTIFY_SOCKET")
            unsetenv("WATCHDOG_USEC")
        }
        let watchdog = SystemdWatchdog(notifier: SystemdNotifier())
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
        let notifier = withEnvironment(Self.cleared) { SystemdNotifier() }
        let watchdog = SystemdWatchdog(notifier: notifier)
        let task = Task { try await watchdog.run() }
        try await Task.sleep(for: .milliseconds(100))
        task.cancel()
        _ = try? await task.value  // returns promptly once cancelled
    }
}
