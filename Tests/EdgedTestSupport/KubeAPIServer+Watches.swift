// The watches open on the test API server right now, for tests that check a client starts and stops its watches.

import Foundation

extension KubeAPIServer {
    /// Open watches on resource `plural` (core or any group) in `namespace` (nil: any) that select the one object
    /// `name`, by the path's name or a `metadata.name=` field selector.
    public func openWatches(_ plural: String, namespace: String?, name: String) -> Int {
        core.store.lock.withLock {
            core.store.watcherCount { w in
                w.resource.plural == plural && w.name == name && (namespace == nil || w.namespace == namespace)
            }
        }
    }

    /// Every open watch.
    public var openWatchCount: Int { core.store.lock.withLock { core.store.watcherCount } }
}
