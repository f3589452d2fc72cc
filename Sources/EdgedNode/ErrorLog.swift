// The last errors the node ran into, for `edgectl status`.

import EdgedCore
import Logging
import Synchronization

/// A bounded list of recent errors, each naming what it concerns. Also logs them.
public final class ErrorLog: Sendable {
    private let entries = Mutex<[(Timestamp, String, String)]>([])
    private let capacity: Int
    private let logger: Logger

    public init(capacity: Int = 50, logger: Logger) {
        self.capacity = capacity
        self.logger = logger
    }

    /// Records an error about `subject` ("pod default/web", "manifest /etc/edged/manifests/a.yaml").
    /// A repeat of the newest entry only refreshes its time, so a crash loop does not flush everything else.
    public func record(_ subject: String, _ message: String) {
        let now = Timestamp.now()
        let isNew = entries.withLock { list -> Bool in
            if let i = list.lastIndex(where: { $0.1 == subject && $0.2 == message }) {
                list.remove(at: i)
                list.append((now, subject, message))
                return false
            }
            list.append((now, subject, message))
            if list.count > capacity { list.removeFirst(list.count - capacity) }
            return true
        }
        if isNew { logger.error("\(subject): \(message)") }
    }

    /// Newest last.
    public func recent(_ n: Int = 10) -> [(time: Timestamp, subject: String, message: String)] {
        entries.withLock { Array($0.suffix(n)).map { ($0.0, $0.1, $0.2) } }
    }
}
