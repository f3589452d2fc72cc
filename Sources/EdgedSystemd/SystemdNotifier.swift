// sd_notify without libsystemd: "KEY=value" lines in one datagram to $NOTIFY_SOCKET.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Tells the service manager about the daemon's state (`Type=notify` units): ready, status text, stopping,
/// watchdog keep-alives.
///
/// Without `NOTIFY_SOCKET` (not started by systemd, or `NotifyAccess=none`) every call is a no-op, so the daemon
/// can call it unconditionally. The environment is passed in rather than read from the process, so tests can use
/// their own socket in parallel.
public struct SystemdNotifier: Sendable {
    /// The socket datagrams go to, nil when notifications are off.
    public let socketPath: String?
    /// How often systemd expects `WATCHDOG=1` (`WatchdogSec=`), nil when the watchdog is off or meant for another
    /// process (`WATCHDOG_PID` names a different pid).
    public let watchdogInterval: Duration?
    private let sender: UnixDatagramSender?

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from `environment`.
    /// - Throws: `SystemdSocketError` when the notify socket cannot be created.
    public init(environment: [String: String]) throws(SystemdSocketError) {
        let path = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        // Only file-system and abstract Unix sockets; "vsock:" addresses are for VMs, not for us.
        if let path, path.hasPrefix("/") || path.hasPrefix("@") {
            socketPath = path
            sender = try UnixDatagramSender(path: path)
        } else {
            socketPath = nil
            sender = nil
        }
        var interval: Duration?
        if let usec = environment["WATCHDOG_USEC"].flatMap({ UInt64($0) }), usec > 0 {
            let forUs = environment["WATCHDOG_PID"].flatMap { Int32($0) }.map { $0 == getpid() } ?? true
            if forUs { interval = .microseconds(Int64(clamping: usec)) }
        }
        watchdogInterval = interval
    }

    /// Reads the variables from the process environment.
    public init() throws(SystemdSocketError) {
        var env: [String: String] = [:]
        for key in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            env[key] = environmentValue(key)
        }
        try self.init(environment: env)
    }

    /// Whether notifications go anywhere.
    public var isEnabled: Bool { sender != nil }

    /// Sends raw assignments ("READY=1", "STATUS=…"), one per line, in one datagram. No-op when disabled.
    public func notify(_ assignments: [String]) throws(SystemdSocketError) {
        guard let sender else { return }
        try sender.send(Array(assignments.joined(separator: "\n").utf8))
    }

    /// Startup finished: systemd now considers the unit started. `status` is shown by `systemctl status`.
    public func ready(status: String? = nil) throws(SystemdSocketError) {
        try notify(["READY=1"] + (status.map { ["STATUS=\(SystemdNotifier.oneLine($0))"] } ?? []))
    }

    /// A free-form one-line status for `systemctl status`.
    public func status(_ text: String) throws(SystemdSocketError) {
        try notify(["STATUS=\(SystemdNotifier.oneLine(text))"])
    }

    /// Shutdown has begun.
    public func stopping(status: String? = nil) throws(SystemdSocketError) {
        try notify(["STOPPING=1"] + (status.map { ["STATUS=\(SystemdNotifier.oneLine($0))"] } ?? []))
    }

    /// The watchdog keep-alive.
    public func watchdog() throws(SystemdSocketError) {
        try notify(["WATCHDOG=1"])
    }

    /// The daemon's main pid changed (e.g. after re-exec).
    public func mainPID(_ pid: Int32) throws(SystemdSocketError) {
        try notify(["MAINPID=\(pid)"])
    }

    /// Status texts are single lines: a newline would start a new assignment.
    static func oneLine(_ text: String) -> String {
        String(text.map { $0 == "\n" || $0 == "\r" ? " " : $0 })
    }
}
