// Fault injection for tests of clients that must survive a bad upstream (the edge hub's bad-input paths). Not
// kube-apiserver behaviour: a test arms a fault for the next request(s) to one path, and the server answers them
// with a body that is not JSON, a watch stream cut off in the middle of an event, an object padded to a huge size, or
// a watch refused with an error status or closed at once. The request itself is served normally (its changes, if any, happen); only
// what goes back on the wire is damaged (a refused watch is closed at once).

import Foundation
import NIOCore
import Synchronization

extension KubeAPIServer {
    /// What goes wrong with an answer.
    public enum Fault: Sendable, Equatable, CustomStringConvertible {
        /// A 200 answer (get or list) whose body is cut two thirds of the way through and ends in garbage, so it
        /// is not valid JSON (Content-Length matches the damaged body).
        case malformedBody
        /// A watch: the first `afterEvents` events are sent whole, then the first half of a further event line, then
        /// the connection is closed abruptly below TLS (no final chunk, no close_notify), like a dying server.
        case truncatedWatch(afterEvents: Int)
        /// A 200 answer of a get, or the first item of a list, gets an annotation "test.edged.io/padding" of
        /// `bytes` characters, so the object is about that big.
        case hugeObject(bytes: Int)
        /// A watch refused with this status code and a Status body (405 MethodNotAllowed from a proxy that passes no
        /// watches, 403 from a stricter authorizer); no watch is opened.
        case refusedWatch(code: Int)
        /// A watch answered 200 that ends at once, cleanly and without an event (a proxy that closes streams).
        case closedWatch

        public var description: String {
            switch self {
            case .malformedBody: return "malformed body"
            case .truncatedWatch(let n): return "watch truncated after \(n) events"
            case .hugeObject(let bytes): return "object padded to \(bytes) bytes"
            case .refusedWatch(let code): return "watch refused with \(code)"
            case .closedWatch: return "watch closed at once"
            }
        }

        /// Watch faults apply to watches only; the others to GETs that are not watches.
        func applies(method: String, isWatch: Bool) -> Bool {
            guard method == "GET" else { return false }
            if case .truncatedWatch = self { return isWatch }
            if case .refusedWatch = self { return isWatch }
            if case .closedWatch = self { return isWatch }
            return !isWatch
        }
    }

    /// Arms `fault` for the next `count` requests whose path (without the query) is `path` and whose kind fits the
    /// fault (a watch for `.truncatedWatch`, another GET for the rest). Faults on one path are used in arming order.
    public func injectFault(path: String, _ fault: Fault, count: Int = 1) {
        KubeFaults.table.withLock { t in
            var entry = t[ObjectIdentifier(core)].flatMap { $0.owner === core ? $0 : nil } ?? KubeFaults.Armed(owner: core)
            for _ in 0..<max(count, 0) { entry.faults.append((path, fault)) }
            t[ObjectIdentifier(core)] = entry
        }
    }

    /// Faults armed and not used yet.
    public var pendingFaults: Int {
        KubeFaults.table.withLock { t in t[ObjectIdentifier(core)].flatMap { $0.owner === core ? $0.faults.count : nil } ?? 0 }
    }

    /// Disarms every fault not used yet.
    public func clearFaults() {
        _ = KubeFaults.table.withLock { $0.removeValue(forKey: ObjectIdentifier(core)) }
    }
}

/// The armed faults of every server (keyed by its core; an entry whose core is gone is ignored).
enum KubeFaults {
    struct Armed: Sendable {
        weak var owner: KubeAPIServerCore?
        var faults: [(path: String, fault: KubeAPIServer.Fault)] = []
    }
    static let table = Mutex<[ObjectIdentifier: Armed]>([:])

    static let padding = "test.edged.io/padding"
}

extension KubeAPIServerCore {
    /// The fault armed for this request, taken (used once); nil for a normal answer.
    func takeFault(_ req: APIRequest) -> KubeAPIServer.Fault? {
        let watch = req.query["watch"] == "1" || req.query["watch"] == "true" || req.path.contains("/watch/")
        let path = req.path.count > 1 && req.path.hasSuffix("/") ? String(req.path.dropLast()) : req.path
        return KubeFaults.table.withLock { t -> KubeAPIServer.Fault? in
            let id = ObjectIdentifier(self)
            guard var entry = t[id], entry.owner === self else { return nil }
            guard let i = entry.faults.firstIndex(where: { $0.path == path && $0.fault.applies(method: req.method, isWatch: watch) }) else {
                return nil
            }
            let fault = entry.faults.remove(at: i).fault
            t[id] = entry
            return fault
        }
    }
}

extension Optional where Wrapped == KubeAPIServer.Fault {
    /// The watch sink to use: the normal one, or one that cuts the stream.
    func watchSink(_ sink: @escaping @Sendable (Data) -> Void, channel: Channel) -> @Sendable (Data) -> Void {
        switch self {
        case .refusedWatch?, .closedWatch?: return { _ in }   // nothing of a refused or closed watch reaches the wire
        default: break
        }
        guard case .truncatedWatch(let n)? = self else { return sink }
        let cutter = WatchCutter(remaining: n, sink: sink, channel: channel)
        if n <= 0 {
            // Nothing whole to send: cut right after the response head (queued behind it on the event loop).
            channel.eventLoop.execute { cutter.cut() }
        }
        return { data in cutter.send(data) }
    }

    /// The answer to send: the normal one, or a damaged copy. A refused watch is closed in `core`'s store.
    func damage(_ reply: APIReply, core: KubeAPIServerCore) -> APIReply {
        guard let fault = self else { return reply }
        if case .refusedWatch(let code) = fault, case .watch(let id, _, _) = reply {
            if let id { core.store.lock.withLock { core.store.removeWatcher(id) } }
            let reason = code == 405 ? "MethodNotAllowed" : code == 403 ? "Forbidden" : code == 410 ? "Expired" : "BadRequest"
            let status: KJSON = .object(["kind": .string("Status"), "apiVersion": .string("v1"), "metadata": .object([:]),
                                         "status": .string("Failure"), "message": .string("the server does not allow this method on the requested resource (watch refused by the test)"),
                                         "reason": .string(reason), "code": .int(code)])
            return .object(code: code, status)
        }
        if case .closedWatch = fault, case .watch(let id, _, _) = reply {
            if let id { core.store.lock.withLock { core.store.removeWatcher(id) } }
            return .watch(id: nil, bookmarks: false, timeoutSeconds: nil)
        }
        let (code, bytes): (Int, [UInt8])
        switch reply {
        case .object(let c, let json): (code, bytes) = (c, json.bytes)
        case .json(let c, let b): (code, bytes) = (c, b)
        case .watch: return reply
        }
        guard code == 200 else { return reply }
        switch fault {
        case .malformedBody:
            return .json(code: code, Array(bytes.prefix(bytes.count * 2 / 3)) + Array(#"<<not JSON: damaged by the test API server"#.utf8))
        case .hugeObject(let size):
            guard var json = try? KJSON.parse(Data(bytes)) else { return reply }
            let pad = KJSON.string(String(repeating: "x", count: max(size, 0)))
            if var items = json["items"]?.array {
                guard !items.isEmpty else { return reply }
                items[0][path: ["metadata", "annotations", KubeFaults.padding]] = pad
                json["items"] = .array(items)
            } else {
                json[path: ["metadata", "annotations", KubeFaults.padding]] = pad
            }
            return .json(code: code, json.bytes)
        case .truncatedWatch, .refusedWatch, .closedWatch:
            return reply
        }
    }
}

/// Passes the first events of a watch, then half an event, then closes the connection abruptly.
final class WatchCutter: Sendable {
    private struct State {
        var remaining: Int
        var cut = false
    }
    private let state: Mutex<State>
    private let sink: @Sendable (Data) -> Void
    private let channel: Channel

    init(remaining: Int, sink: @escaping @Sendable (Data) -> Void, channel: Channel) {
        self.state = Mutex(State(remaining: remaining))
        self.sink = sink
        self.channel = channel
    }

    /// One event: passed while whole events remain (the last one schedules the cut); dropped afterwards.
    func send(_ data: Data) {
        let (pass, last) = state.withLock { s -> (Bool, Bool) in
            guard s.remaining > 0 else { return (false, false) }
            s.remaining -= 1
            return (true, s.remaining == 0)
        }
        if pass { sink(data) }
        if last { channel.eventLoop.execute { self.cut() } }
    }

    /// Half a line of a made-up event, then the socket closed below TLS (once).
    func cut() {
        let first = state.withLock { s -> Bool in
            defer { s.cut = true }
            return !s.cut
        }
        guard first else { return }
        sink(Data(#"{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"cut-off-in-the-mi"#.utf8))
        let channel = self.channel
        channel.eventLoop.execute {
            _ = KubeConnections.Connection(channel: channel).closeAbruptly()
        }
    }
}
