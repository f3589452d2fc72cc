// A small time-limited cache for TokenReview and SubjectAccessReview answers.

import Synchronization

/// Keeps answers for a while so that a busy caller (metrics-server every 15 s, a `kubectl logs -f`) does not cost a
/// review per request. Entries expire after the TTL given when they were stored; at most `capacity` are kept, and
/// when full, expired entries go first, then the ones closest to expiring.
final class ReviewCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private struct Entry {
        var value: Value
        var expires: ContinuousClock.Instant
    }

    private let entries = Mutex<[Key: Entry]>([:])
    let capacity: Int

    init(capacity: Int) {
        self.capacity = max(capacity, 1)
    }

    /// The stored value for `key`, if it has not expired.
    func value(for key: Key, now: ContinuousClock.Instant = .now) -> Value? {
        entries.withLock { entries in
            guard let entry = entries[key] else { return nil }
            if entry.expires <= now {
                entries[key] = nil
                return nil
            }
            return entry.value
        }
    }

    /// Stores `value` for `ttl`; a zero TTL stores nothing.
    func store(_ value: Value, for key: Key, ttl: Duration, now: ContinuousClock.Instant = .now) {
        guard ttl > .zero else { return }
        entries.withLock { entries in
            if entries[key] == nil, entries.count >= capacity {
                entries = entries.filter { $0.value.expires > now }
                while entries.count >= capacity, let oldest = entries.min(by: { $0.value.expires < $1.value.expires }) {
                    entries[oldest.key] = nil
                }
            }
            entries[key] = Entry(value: value, expires: now + ttl)
        }
    }

    var count: Int { entries.withLock { $0.count } }
}
