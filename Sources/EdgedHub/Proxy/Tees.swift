// Copying cacheable answers into the store while they stream to the caller. The caller never waits for the store:
// bytes are forwarded as they arrive and handed to the CacheWriter, which parses and stores them in the background.

import EdgedCore
import EdgedKube
import Logging
import Synchronization

/// get and list: forward (or, for filtered resources, buffer + filter), then cache the whole body.
struct ReadTee {
    let core: HubCore
    let call: HubCall
    let info: APIRequestInfo

    func run(headers: [(String, String)], chunks: KubeByteStream, writer: any HubResponseWriter) async throws {
        var body: [UInt8] = []
        var tooBig = false
        if Filtering.applies(info) {
            for try await chunk in chunks {
                body += chunk
                if body.count > core.config.maxCachedListBytes { tooBig = true; break }
            }
            if tooBig {
                // Not filtered nor cached: forward what came and the rest as it comes.
                try await writer.writeHead(status: 200, headers: headers)
                try await writer.writeBody(body)
                for try await chunk in chunks { try await writer.writeBody(chunk) }
                try await writer.finish()
                core.logger.warning("hub: \(info.verb.rawValue) \(info.resource) for \(call.component) is over \(core.config.maxCachedListBytes) bytes: not cached")
                return
            }
            var out = body
            if let value = try? JSONValue.parse(body) {
                let filters = core.filters(offline: false)
                let filtered: JSONValue?
                if info.verb == .list, case .array(let items)? = value["items"] {
                    var v = value
                    v.set(["items"], to: .array(items.compactMap {
                        filters.apply(component: call.component, resourceKey: info.resourceKey, object: $0)
                    }))
                    filtered = v
                } else {
                    filtered = filters.apply(component: call.component, resourceKey: info.resourceKey, object: value)
                }
                if let filtered { out = HubJSON.bytes(filtered) }
            }
            try await writer.writeHead(status: 200, headers: headers.filter { $0.0.lowercased() != "content-length" })
            try await writer.writeBody(out)
            try await writer.finish()
        } else {
            try await writer.writeHead(status: 200, headers: headers)
            // Chunks are passed on in batches of up to 256 KiB: one write per TLS record costs more than the copy.
            var batch: [UInt8] = []
            // A list at the resourceVersion the store already holds for this scope is not copied at all.
            var alreadyStored = false
            var checkedVersion = info.verb != .list
            for try await chunk in chunks {
                if !tooBig && !alreadyStored {
                    body += chunk
                    if body.count > core.config.maxCachedListBytes {
                        tooBig = true
                        body = []
                    }
                    if !checkedVersion, body.count >= 4096 {
                        checkedVersion = true
                        let job = ListJob(component: call.component, info: info, body: [])
                        if let rv = CacheWriter.listResourceVersion(body), core.cacheWriter.isStored(scope: job.scope, resourceVersion: rv) {
                            alreadyStored = true
                            body = []
                        }
                    }
                }
                batch += chunk
                if batch.count >= 256 << 10 {
                    try await writer.writeBody(batch)
                    batch.removeAll(keepingCapacity: true)
                }
            }
            if !batch.isEmpty { try await writer.writeBody(batch) }
            try await writer.finish()
            if tooBig {
                core.logger.warning("hub: \(info.verb.rawValue) \(info.resource) for \(call.component) is over \(core.config.maxCachedListBytes) bytes: not cached")
                return
            }
            if alreadyStored { return }
        }
        if info.verb == .get, let name = info.name {
            core.cacheWriter.submit(.object(call.key(info, name: name), body))
        } else {
            core.cacheWriter.submit(.list(ListJob(component: call.component, info: info, body: body)))
        }
    }
}

/// A watch: whole events are forwarded as they come (never half a line, so what follows a broken stream — the
/// store's bookmarks — stays decodable) and applied to the store in order.
struct WatchTee {
    let core: HubCore
    let call: HubCall
    let info: APIRequestInfo
    let progress: WatchProgress

    func run(headers: [(String, String)], chunks: KubeByteStream, writer: any HubResponseWriter) async throws {
        try await writer.writeHead(status: 200, headers: headers)
        let filtering = Filtering.applies(info)
        let filters = filtering ? core.filters(offline: false) : nil
        var lines = LineSplitter()
        for try await chunk in chunks {
            var out: [UInt8] = []
            for line in lines.feed(chunk) {
                core.cacheWriter.submit(.event(component: call.component, info: info, line: line))
                progress.lastLine = line
                guard let filters else {
                    out += line
                    out.append(0x0A)
                    continue
                }
                guard var event = try? JSONValue.parse(line), let object = event["object"],
                      event["type"]?.stringValue != "BOOKMARK", event["type"]?.stringValue != "ERROR" else {
                    out += line
                    out.append(0x0A)
                    continue
                }
                guard let filtered = filters.apply(component: call.component, resourceKey: info.resourceKey, object: object) else { continue }
                event.set(["object"], to: filtered)
                out += HubJSON.bytes(event)
                out.append(0x0A)
            }
            if !out.isEmpty { try await writer.writeBody(out) }
            if lines.overflowed {
                // An event bigger than any object can be: end the watch so the client re-lists.
                core.logger.warning("hub: watch of \(info.resource) for \(call.component) sent an event over \(LineSplitter.maxLine) bytes: ended the watch")
                progress.broken = true
                return
            }
        }
        progress.partial = lines.hasPending
    }
}

/// What a forwarded watch got to: the last whole event (for the resourceVersion of later bookmarks), and whether it
/// ended in a state where nothing more may be written.
final class WatchProgress: Sendable {
    private struct State {
        var lastLine: [UInt8]?
        var broken = false
        var partial = false
    }
    private let state = Mutex(State())

    var lastLine: [UInt8]? {
        get { state.withLock { $0.lastLine } }
        set { state.withLock { $0.lastLine = newValue } }
    }
    var broken: Bool {
        get { state.withLock { $0.broken } }
        set { state.withLock { $0.broken = newValue } }
    }
    var partial: Bool {
        get { state.withLock { $0.partial } }
        set { state.withLock { $0.partial = newValue } }
    }

    /// The resourceVersion of the last event forwarded, if it had one.
    var resourceVersion: String? {
        guard let line = lastLine, let event = try? JSONValue.parse(line) else { return nil }
        return event[path: ["object", "metadata", "resourceVersion"]]?.stringValue
    }
}

/// Splits a byte stream into newline-terminated lines; an over-long line is skipped (flagged), not buffered.
struct LineSplitter {
    static let maxLine = 16 << 20
    private var pending: [UInt8] = []
    private var skipping = false
    var overflowed = false
    /// Bytes of an unfinished line are waiting (the stream stopped mid-event).
    var hasPending: Bool { !pending.isEmpty }

    mutating func feed(_ chunk: [UInt8]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var start = 0
        for i in chunk.indices where chunk[i] == 0x0A {
            if skipping {
                skipping = false
            } else {
                pending += chunk[start..<i]
                if !pending.isEmpty { out.append(pending) }
            }
            pending.removeAll(keepingCapacity: true)
            start = i + 1
        }
        if !skipping { pending += chunk[start...] }
        if pending.count > LineSplitter.maxLine {
            pending = []
            skipping = true
            overflowed = true
        }
        return out
    }
}
