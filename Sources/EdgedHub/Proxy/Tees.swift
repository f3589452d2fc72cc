// Copying cacheable answers into the store while they stream to the caller. The caller never waits for the store:
// bytes are forwarded as they arrive and handed to the CacheWriter, which parses and stores them in the background.

import EdgedCore
import EdgedKube
import Logging

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
            for try await chunk in chunks {
                if !tooBig {
                    body += chunk
                    if body.count > core.config.maxCachedListBytes {
                        tooBig = true
                        body = []
                    }
                }
                try await writer.writeBody(chunk)
            }
            try await writer.finish()
            if tooBig {
                core.logger.warning("hub: \(info.verb.rawValue) \(info.resource) for \(call.component) is over \(core.config.maxCachedListBytes) bytes: not cached")
                return
            }
        }
        if info.verb == .get, let name = info.name {
            core.cacheWriter.submit(.object(call.key(info, name: name), body))
        } else {
            core.cacheWriter.submit(.list(ListJob(component: call.component, info: info, body: body)))
        }
    }
}

/// A watch: events are forwarded as they come and applied to the store in order.
struct WatchTee {
    let core: HubCore
    let call: HubCall
    let info: APIRequestInfo

    func run(headers: [(String, String)], chunks: KubeByteStream, writer: any HubResponseWriter) async throws {
        try await writer.writeHead(status: 200, headers: headers)
        let filtering = Filtering.applies(info)
        let filters = filtering ? core.filters(offline: false) : nil
        var lines = LineSplitter()
        for try await chunk in chunks {
            if !filtering { try await writer.writeBody(chunk) }
            for line in lines.feed(chunk) {
                core.cacheWriter.submit(.event(component: call.component, info: info, line: line))
                guard let filters else { continue }
                guard var event = try? JSONValue.parse(line), let object = event["object"],
                      event["type"]?.stringValue != "BOOKMARK", event["type"]?.stringValue != "ERROR" else {
                    try await writer.writeBody(line + [0x0A])
                    continue
                }
                guard let out = filters.apply(component: call.component, resourceKey: info.resourceKey, object: object) else { continue }
                event.set(["object"], to: out)
                try await writer.writeBody(HubJSON.bytes(event) + [0x0A])
            }
            if lines.overflowed {
                core.logger.warning("hub: watch of \(info.resource) for \(call.component) sent an event over \(LineSplitter.maxLine) bytes: not cached")
                lines.overflowed = false
            }
        }
        // Not finished here: the core decides whether the response ends or goes on in the store's bookmark mode.
    }
}

/// Splits a byte stream into newline-terminated lines; an over-long line is skipped (flagged), not buffered.
struct LineSplitter {
    static let maxLine = 16 << 20
    private var pending: [UInt8] = []
    private var skipping = false
    var overflowed = false

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
