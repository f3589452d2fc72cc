// A work queue like client-go's: keys, not objects (the worker reads the newest cached state when it gets to a key),
// each key at most once in the queue, a key being processed that is added again is processed once more afterwards,
// and failed keys come back after a per-key exponential backoff.

/// Keys waiting to be reconciled. Workers call `get()` and `done(_:)`; `shutDown()` wakes and ends them.
actor WorkQueue {
    private var items: [String] = []
    private var head = 0
    private var queued: Set<String> = []
    private var processing: Set<String> = []
    private var dirty: Set<String> = []
    private var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    private var nextWaiter = 0
    private var failures: [String: Int] = [:]
    private var delayed: [String: Task<Void, Never>] = [:]
    private(set) var isShutDown = false
    let initialBackoff: Duration
    let maxBackoff: Duration

    init(initialBackoff: Duration = .milliseconds(200), maxBackoff: Duration = .seconds(60)) {
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
    }

    func add(_ key: String) {
        guard !isShutDown else { return }
        if processing.contains(key) {
            dirty.insert(key)
            return
        }
        guard queued.insert(key).inserted else { return }
        items.append(key)
        wakeOne()
    }

    func add<S: Sequence>(contentsOf keys: S) where S.Element == String {
        for k in keys { add(k) }
    }

    /// The next key (now marked as being processed), or nil once the queue is shut down or the task cancelled.
    func get() async -> String? {
        while true {
            if isShutDown || Task.isCancelled { return nil }
            if head < items.count {
                let key = items[head]
                head += 1
                if head > 1024, head * 2 > items.count {
                    items.removeFirst(head)
                    head = 0
                }
                queued.remove(key)
                processing.insert(key)
                return key
            }
            let id = nextWaiter
            nextWaiter += 1
            await withTaskCancellationHandler {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    if Task.isCancelled || isShutDown { c.resume() } else { waiters[id] = c }
                }
            } onCancel: {
                Task { await self.wake(id) }
            }
        }
    }

    /// The key's processing is over; when it was added meanwhile it goes back in the queue.
    func done(_ key: String) {
        processing.remove(key)
        if dirty.remove(key) != nil { add(key) }
    }

    /// The key succeeded (or needs no retry): its backoff starts over.
    func forget(_ key: String) {
        failures[key] = nil
    }

    /// Adds the key again after its backoff (200 ms, doubling, up to the maximum); returns the delay.
    @discardableResult
    func retryLater(_ key: String) -> Duration {
        let n = failures[key, default: 0]
        failures[key] = n + 1
        var delay = initialBackoff
        for _ in 0..<min(n, 30) where delay < maxBackoff { delay = delay * 2 }
        delay = min(delay, maxBackoff)
        delayed[key]?.cancel()
        delayed[key] = Task { [weak self] in
            do { try await Task.sleep(for: delay) } catch { return }
            await self?.fireDelayed(key)
        }
        return delay
    }

    private func fireDelayed(_ key: String) {
        delayed[key] = nil
        add(key)
    }

    /// Nothing queued, nothing being processed, no retry waiting.
    var isIdle: Bool { head >= items.count && processing.isEmpty && delayed.isEmpty }

    var count: Int { items.count - head }

    /// Ends the queue: waiting workers get nil, delayed retries are dropped.
    func shutDown() {
        isShutDown = true
        for t in delayed.values { t.cancel() }
        delayed.removeAll()
        let all = waiters.values
        waiters.removeAll()
        for c in all { c.resume() }
    }

    private func wakeOne() {
        guard let (id, c) = waiters.first else { return }
        waiters[id] = nil
        c.resume()
    }

    private func wake(_ id: Int) {
        waiters.removeValue(forKey: id)?.resume()
    }
}
