// The watchdog keep-alive as a Service: WATCHDOG=1 at half the interval systemd asked for.

import ServiceLifecycle

/// Pings systemd's watchdog at half of `WatchdogSec=` until cancelled or the service group shuts down.
///
/// When the watchdog is off it just waits for shutdown, so that ending early does not stop the service group.
/// A failed ping is not fatal here: if pings keep failing, systemd restarts the unit, which is the point.
public struct SystemdWatchdog: Service {
    public let notifier: SystemdNotifier
    /// Time between pings; defaults to half the watchdog interval.
    public let period: Duration?

    public init(notifier: SystemdNotifier, period: Duration? = nil) {
        self.notifier = notifier
        self.period = period ?? notifier.watchdogInterval.map { $0 / 2 }
    }

    public func run() async throws {
        guard notifier.isEnabled, let period else {
            try? await gracefulShutdown()
            return
        }
        let notifier = self.notifier
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? notifier.watchdog()
                do { try await Task.sleep(for: period) } catch { return }
            }
        }
    }
}
