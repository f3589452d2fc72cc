// port-forward over SPDY (portforward.k8s.io): the client opens an error and a data stream per connection,
// paired by their requestid header; the port is in the port header.
import Logging
import NIOCore

/// Pairs the client's streams and runs one `PortForwardConnection` per pair. Confined to the session's event loop.
final class SPDYPortForwardHandler: SPDYApplication, @unchecked Sendable {
    nonisolated(unsafe) static var streamCreationTimeout: TimeAmount = .seconds(30)

    private struct Pair {
        var data: UInt32?
        var error: UInt32?
        var connection: PortForwardConnection?
        var timeout: Scheduled<Void>?
    }

    let backend: any KubeletBackend
    let namespace: String
    let pod: String
    let uid: String?
    let logger: Logger
    private var pairs: [String: Pair] = [:]
    private var requestOf: [UInt32: String] = [:]

    init(backend: any KubeletBackend, namespace: String, pod: String, uid: String?, logger: Logger) {
        self.backend = backend
        self.namespace = namespace
        self.pod = pod
        self.uid = uid
        self.logger = logger
    }

    func streamOpened(_ session: SPDYSession, id: UInt32, headers: SPDYHeaders) {
        let type = headers["streamtype"] ?? ""
        guard type == "data" || type == "error" else {
            logger.warning("port-forward to pod \(namespace)/\(pod): stream \(id) has streamtype \"\(type)\" (want data or error); resetting it")
            session.reset(id, status: SPDYStatus.refusedStream)
            return
        }
        let request = headers["requestid"] ?? "stream-\(id)"
        var pair = pairs[request] ?? Pair()
        if (type == "data" && pair.data != nil) || (type == "error" && pair.error != nil) {
            logger.warning("port-forward to pod \(namespace)/\(pod): a second \(type) stream for request \(request); resetting it")
            session.reset(id, status: SPDYStatus.refusedStream)
            return
        }
        if type == "data" { pair.data = id } else { pair.error = id }
        requestOf[id] = request
        if pair.data == nil || pair.error == nil {
            pair.timeout = session.eventLoop.scheduleTask(in: Self.streamCreationTimeout) { [weak self, weak session] in
                guard let self, let session, let p = self.pairs[request], p.connection == nil else { return }
                self.logger.warning("port-forward to pod \(self.namespace)/\(self.pod): request \(request) never got both its data and error streams; resetting it")
                if let d = p.data { session.reset(d) }
                if let e = p.error { session.reset(e) }
                self.pairs[request] = nil
            }
            pairs[request] = pair
            return
        }
        pair.timeout?.cancel()
        guard let dataID = pair.data, let errorID = pair.error else { return }
        let portText = session.headers(of: dataID)?["port"] ?? ""
        guard let port = UInt16(portText), port > 0 else {
            let message = "invalid port \"\(portText)\" in port-forward to pod \(namespace)/\(pod): want 1-65535"
            _ = session.send(ByteBuffer(string: message), on: errorID, fin: true)
            _ = session.finish(dataID)
            pairs[request] = nil
            return
        }
        let connection = PortForwardConnection(eventLoop: session.eventLoop, port: port, logger: logger)
        connection.toClient = { [weak session] bytes in
            guard let session else { return connection.eventLoop.makeSucceededVoidFuture() }
            return session.send(bytes, on: dataID)
        }
        connection.onPodEOF = { [weak self, weak session] in
            _ = session?.finish(dataID)
            _ = session?.finish(errorID)
            self?.done(request)
        }
        connection.onError = { [weak self, weak session] message in
            _ = session?.send(ByteBuffer(string: message), on: errorID, fin: true)
            _ = session?.finish(dataID)
            self?.done(request)
        }
        pair.connection = connection
        pairs[request] = pair
        connection.start(backend: backend, namespace: namespace, pod: pod, uid: uid)
    }

    private func done(_ request: String) {
        guard let pair = pairs[request] else { return }
        pair.connection?.close()
        pairs[request] = nil
    }

    func streamData(_ session: SPDYSession, id: UInt32, _ data: ByteBuffer) -> EventLoopFuture<Void> {
        guard let request = requestOf[id], let pair = pairs[request], pair.data == id, let connection = pair.connection
        else { return session.eventLoop.makeSucceededVoidFuture() }
        return connection.write(data)
    }

    func streamHalfClosed(_ session: SPDYSession, id: UInt32) {
        guard let request = requestOf[id], let pair = pairs[request], pair.data == id else { return }
        pair.connection?.clientFinished()
    }

    func streamReset(_ session: SPDYSession, id: UInt32) {
        guard let request = requestOf.removeValue(forKey: id), let pair = pairs[request] else { return }
        pair.timeout?.cancel()
        if let other = pair.data == id ? pair.error : pair.data { session.reset(other) }
        done(request)
    }

    func sessionEnded(_ session: SPDYSession) {
        for (_, pair) in pairs {
            pair.timeout?.cancel()
            pair.connection?.close()
        }
        pairs = [:]
    }
}
