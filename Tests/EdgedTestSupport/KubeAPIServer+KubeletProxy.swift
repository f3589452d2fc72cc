// The API server → kubelet path: pods/{name}/log, exec, attach, portforward and nodes/{name}/proxy/{path} are
// authorized here, turned into kubelet API requests and relayed to the node's kubelet over TLS (directly or through
// an HTTP CONNECT egress proxy), answers streamed back; upgrades (SPDY, WebSocket) are spliced byte for byte after the
// kubelet's 101.
//
// Copied from kube-apiserver:
// - Verb from the method (GET→get, POST→create, ...) on pods/log, pods/exec, pods/attach, pods/portforward,
//   nodes/proxy; the fixed policy of KubeAPIServer+Auth decides (403 with the real message).
// - Pod 404; container: the only one when none is named, else 400 "a container name must be specified for pod P,
//   choose one of: [a b]"; an unknown one 400 "container C is not valid for pod P"; exec/attach/portforward of a pod
//   with no node 400 "pod P does not have a host assigned"; the log of such a pod is an empty 200.
// - Kubelet address: Node .status.addresses InternalIP, then Hostname; port .status.daemonEndpoints.kubeletEndpoint
//   .Port (10250 when unset). Node missing: 404; no address: 500.
// - Kubelet paths: /containerLogs/{ns}/{pod}/{container}?follow=true&limitBytes=…&previous=true&sinceSeconds=…
//   &sinceTime=…&tailLines=…&timestamps=true (sorted like Go's url.Values), /exec/{ns}/{pod}/{container}?command=…
//   &stdin=1&stdout=1&stderr=1&tty=1 (kube-apiserver sends "1"), /attach/… (same flags), /portForward/{ns}/{pod}
//   (?port=… when given), /{path} of nodes/proxy with the query unchanged.
// - The Authorization header is not passed on (kube-apiserver drops it after authenticating); the kubelet sees the
//   API server's kubelet client certificate (CN kube-apiserver-kubelet-client, O system:masters).
// - The kubelet's serving certificate must chain to the cluster CA and name the address dialed (DNS or IP SAN),
//   like --kubelet-certificate-authority.
// - A dial, proxy or TLS failure is 500 InternalError "error dialing backend: …" naming the node and address.
// - kubectl ≥ 1.31 port-forward (PortForwardWebsockets): a WebSocket request with subprotocol
//   "SPDY/3.1+portforward.k8s.io" is upgraded to the kubelet as SPDY/3.1 + X-Stream-Protocol-Version:
//   portforward.k8s.io, and the SPDY byte stream travels in WebSocket binary messages both ways (no channel byte).
// NOT copied: exec/attach WebSocket requests are passed through as WebSocket (the real server translates
// v5.channel.k8s.io to SPDY for old kubelets); no nodes/{name}:{port}/proxy; no response size limits; backpressure is
// only "stop reading the other side while this one cannot write".

import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS
import X509

/// One kubelet-bound request: what to dial and what to send.
struct KubeletPlan: Sendable {
    let node: String
    let host: String
    let port: Int
    /// Kubelet path and query.
    let uri: String
    /// A pod with no node: a log request answers an empty 200.
    let emptyLog: Bool
    /// A WebSocket-tunneled SPDY port-forward to translate.
    let tunnel: Bool
}

enum KubeletProxy {
    enum Kind: String { case log, exec, attach, portforward, nodeProxy }

    struct Target {
        let kind: Kind
        let namespace: String
        let name: String
        /// nodes/proxy: the kubelet path.
        let proxyPath: String
    }

    /// pods/{name}/{log,exec,attach,portforward} and nodes/{name}/proxy[/{path}].
    static func parse(path: String) -> Target? {
        let segs = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
        if segs.count == 7, segs[0] == "api", segs[1] == "v1", segs[2] == "namespaces", segs[4] == "pods",
           !segs[3].isEmpty, !segs[5].isEmpty, let kind = Kind(rawValue: segs[6]), kind != .nodeProxy {
            return Target(kind: kind, namespace: segs[3], name: segs[5], proxyPath: "")
        }
        if segs.count >= 5, segs[0] == "api", segs[1] == "v1", segs[2] == "nodes", !segs[3].isEmpty, segs[4] == "proxy" {
            let rest = segs.dropFirst(5).joined(separator: "/")
            return Target(kind: .nodeProxy, namespace: "", name: segs[3], proxyPath: "/" + rest)
        }
        return nil
    }

    /// The query as ordered (name, value) pairs, decoded like Go's url.ParseQuery.
    static func parseQuery(_ raw: String) -> [(String, String)] {
        raw.split(separator: "&").map { item in
            let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func dec(_ s: Substring) -> String {
                String(s).split(separator: "+", omittingEmptySubsequences: false).joined(separator: " ")
                    .removingPercentEncoding ?? String(s)
            }
            return (dec(kv[0]), kv.count > 1 ? dec(kv[1]) : "")
        }
    }

    /// Go's url.QueryEscape.
    static func escape(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
                 UInt8(ascii: "~"):
                out.append(Character(Unicode.Scalar(b)))
            case UInt8(ascii: " "): out.append("+")
            default:
                let hex = Array("0123456789ABCDEF")
                out.append("%")
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 15)])
            }
        }
        return out
    }

    static func encode(_ pairs: [(String, String)]) -> String {
        pairs.map { "\(escape($0.0))=\(escape($0.1))" }.joined(separator: "&")
    }

    /// Go's strconv.ParseBool truth.
    static func isTrue(_ v: String?) -> Bool { ["1", "t", "T", "true", "TRUE", "True"].contains(v ?? "") }

    static func isWebSocketTunnel(_ headers: HTTPHeaders) -> Bool {
        headers["upgrade"].contains { $0.lowercased() == "websocket" }
            && headers["sec-websocket-protocol"].flatMap { $0.split(separator: ",") }
                .contains { $0.trimmingCharacters(in: .whitespaces) == "SPDY/3.1+portforward.k8s.io" }
    }
}

extension KubeAPIServerCore {
    /// Authorizes and resolves a kubelet-bound request (the store lock must be held).
    func kubeletPlan(_ t: KubeletProxy.Target, method: String, query: [(String, String)], headers: HTTPHeaders,
                     user: KubeUser) throws -> KubeletPlan {
        let verb = switch method {
        case "GET", "HEAD": "get"
        case "POST": "create"
        case "PUT": "update"
        case "PATCH": "patch"
        case "DELETE": "delete"
        default: throw APIError.methodNotAllowed(method)
        }
        let nodes = KubeResource.find(group: "", version: "v1", plural: "nodes")!
        let nodeName: String
        var uri: String
        var tunnel = false
        if t.kind == .nodeProxy {
            try authorize(user, verb: verb, target: APITarget(resource: nodes, namespace: nil, name: t.name,
                                                              subresource: "proxy", legacyWatch: false))
            nodeName = t.name
            uri = t.proxyPath
            let raw = query.isEmpty ? "" : KubeletProxy.encode(query)
            if !raw.isEmpty { uri += "?" + raw }
        } else {
            if t.kind == .log && verb != "get" { throw APIError.methodNotAllowed(method) }
            if t.kind != .log && verb != "get" && verb != "create" { throw APIError.methodNotAllowed(method) }
            try authorize(user, verb: verb, target: APITarget(resource: Self.pods, namespace: t.namespace, name: t.name,
                                                              subresource: t.kind.rawValue, legacyWatch: false))
            guard let pod = store.get(Self.pods, namespace: t.namespace, name: t.name) else {
                throw APIError.notFound(Self.pods, t.name)
            }
            func values(_ k: String) -> [String] { query.filter { $0.0 == k }.map(\.1) }
            func last(_ k: String) -> String? { values(k).last }
            var container = ""
            if t.kind != .portforward { container = try validContainer(last("container") ?? "", pod: pod, name: t.name) }
            let node = pod[path: ["spec", "nodeName"]]?.string ?? ""
            if node.isEmpty {
                if t.kind == .log { return KubeletPlan(node: "", host: "", port: 0, uri: "", emptyLog: true, tunnel: false) }
                throw APIError.badRequest("pod \(t.name) does not have a host assigned")
            }
            nodeName = node
            var params: [(String, String)] = []
            switch t.kind {
            case .log:
                for k in ["follow", "previous", "timestamps"] where KubeletProxy.isTrue(last(k)) { params.append((k, "true")) }
                for k in ["sinceSeconds", "tailLines", "limitBytes"] {
                    guard let v = last(k) else { continue }
                    guard let n = Int(v) else { throw APIError.badRequest("invalid value for \(k): \(v)") }
                    if n < (k == "tailLines" ? 0 : 1) {
                        throw APIError.invalid(kind: "PodLogOptions", name: "", [.init(reason: "FieldValueInvalid", field: k,
                                               message: "Invalid value: \(n): must be greater than \(k == "tailLines" ? "or equal to 0" : "0")")])
                    }
                    params.append((k, String(n)))
                }
                if let v = last("sinceTime") { params.append(("sinceTime", v)) }
                if last("sinceSeconds") != nil && last("sinceTime") != nil {
                    throw APIError.invalid(kind: "PodLogOptions", name: "", [.init(reason: "FieldValueForbidden", field: "",
                                           message: "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified")])
                }
                params.sort { $0.0 < $1.0 }
                uri = "/containerLogs/\(t.namespace)/\(t.name)/\(container)"
            case .exec, .attach:
                for k in ["stdin", "stdout", "stderr", "tty"] where KubeletProxy.isTrue(last(k)) { params.append((k, "1")) }
                if t.kind == .exec { params += values("command").map { ("command", $0) } }
                params.sort { $0.0 < $1.0 }   // stable: commands keep their order
                uri = "/\(t.kind.rawValue)/\(t.namespace)/\(t.name)/\(container)"
            default:
                params = values("port").map { ("port", $0) }
                uri = "/portForward/\(t.namespace)/\(t.name)"
                tunnel = KubeletProxy.isWebSocketTunnel(headers)
            }
            if !params.isEmpty { uri += "?" + KubeletProxy.encode(params) }
        }
        guard let node = store.get(nodes, namespace: nil, name: nodeName) else { throw APIError.notFound(nodes, nodeName) }
        let addresses = node[path: ["status", "addresses"]]?.array ?? []
        func address(_ type: String) -> String? {
            addresses.first { $0["type"]?.string == type }?["address"]?.string.flatMap { $0.isEmpty ? nil : $0 }
        }
        guard let host = address("InternalIP") ?? address("Hostname") else {
            let known = addresses.map { "{\($0["type"]?.string ?? "") \($0["address"]?.string ?? "")}" }.joined(separator: " ")
            throw APIError(code: 500, reason: "InternalError",
                           message: "Internal error occurred: no preferred addresses found for node \"\(nodeName)\"; known addresses: [\(known)]")
        }
        let port = node[path: ["status", "daemonEndpoints", "kubeletEndpoint", "Port"]]?.int.flatMap { $0 > 0 ? $0 : nil } ?? 10250
        return KubeletPlan(node: nodeName, host: host, port: port, uri: uri, emptyLog: false, tunnel: tunnel)
    }

    private func validContainer(_ name: String, pod: KJSON, name podName: String) throws -> String {
        let spec = pod["spec"] ?? .object([:])
        var all: [String] = []
        for key in ["initContainers", "containers", "ephemeralContainers"] {
            all += (spec[key]?.array ?? []).compactMap { $0["name"]?.string }
        }
        let main = (spec["containers"]?.array ?? []).compactMap { $0["name"]?.string }
        if name.isEmpty {
            if main.count == 1 { return main[0] }
            if main.isEmpty { throw APIError.badRequest("a container name must be specified for pod \(podName)") }
            throw APIError.badRequest("a container name must be specified for pod \(podName), choose one of: [\(all.joined(separator: " "))]")
        }
        guard all.contains(name) else { throw APIError.badRequest("container \(name) is not valid for pod \(podName)") }
        return name
    }

    /// The TLS context the server dials kubelets with (made once).
    func kubeletClientTLS() throws -> NIOSSLContext {
        if let c = kubeletSide.state.withLock({ $0.kubeletTLS }) { return c }
        let pair = try pki.issueClient(cn: "kube-apiserver-kubelet-client", orgs: ["system:masters"], lifetime: 10 * 86400)
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(pair.certPEM.utf8)).map { .certificate($0) }
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(pair.keyPEM.utf8), format: .pem))
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(pki.caPEM.utf8)))
        tls.certificateVerification = .noHostnameVerification   // the SAN is checked against the address dialed
        let context = try NIOSSLContext(configuration: tls)
        return kubeletSide.state.withLock { s in
            if let c = s.kubeletTLS { return c }
            s.kubeletTLS = context
            return context
        }
    }
}

// MARK: - The relay

extension KubeletProxy {
    /// Serves a kubelet-bound request on the client's connection if `head` is one; false for any other request.
    /// Called on the connection's event loop by KubeAPIHTTPHandler once the request is complete.
    static func start(core: KubeAPIServerCore, context: ChannelHandlerContext, head: HTTPRequestHead, body: Data,
                      user: KubeUser) -> Bool {
        let uri = head.uri
        let q = uri.firstIndex(of: "?")
        let path = q.map { String(uri[..<$0]) } ?? uri
        guard let target = parse(path: path) else { return false }
        let rawQuery = q.map { String(uri[uri.index(after: $0)...]) } ?? ""
        let client = context.channel
        let plan: KubeletPlan
        do {
            plan = try core.store.lock.withLock {
                try core.kubeletPlan(target, method: head.method.rawValue, query: parseQuery(rawQuery), headers: head.headers, user: user)
            }
        } catch {
            let e = (error as? APIError) ?? APIError(code: 500, reason: "InternalError", message: "Internal error occurred: \(error)")
            respond(client, head: head, core: core, user: user, code: e.code, body: e.status.bytes, contentType: "application/json")
            return true
        }
        if plan.emptyLog {
            respond(client, head: head, core: core, user: user, code: 200, body: [], contentType: "text/plain")
            return true
        }
        let tls: NIOSSLContext
        do { tls = try core.kubeletClientTLS() } catch {
            respond(client, head: head, core: core, user: user, code: 500,
                    body: APIError(code: 500, reason: "InternalError", message: "kubelet client certificate: \(error)").status.bytes,
                    contentType: "application/json")
            return true
        }
        let egress = core.kubeletSide.state.withLock { $0.egress }
        let upgrade = head.headers["connection"].contains { $0.lowercased().contains("upgrade") } && head.headers["upgrade"].first != nil

        // The request the kubelet gets.
        var out = HTTPHeaders()
        let hopByHop: Set<String> = ["connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
                                     "transfer-encoding", "upgrade", "host", "authorization", "content-length"]
        for (name, value) in head.headers {
            let lower = name.lowercased()
            if hopByHop.contains(lower) || lower.hasPrefix("impersonate-") { continue }
            if plan.tunnel && lower.hasPrefix("sec-websocket-") { continue }
            out.add(name: name, value: value)
        }
        out.add(name: "Host", value: plan.host.contains(":") ? "[\(plan.host)]:\(plan.port)" : "\(plan.host):\(plan.port)")
        if plan.tunnel {
            out.add(name: "Connection", value: "Upgrade")
            out.add(name: "Upgrade", value: "SPDY/3.1")
            out.replaceOrAdd(name: "X-Stream-Protocol-Version", value: "portforward.k8s.io")
        } else if upgrade {
            out.add(name: "Connection", value: "Upgrade")
            for v in head.headers["upgrade"] { out.add(name: "Upgrade", value: v) }
        }
        if !body.isEmpty || head.method == .POST || head.method == .PUT || head.method == .PATCH {
            out.add(name: "Content-Length", value: String(body.count))
        }
        var kubeletHead = HTTPRequestHead(version: .http1_1, method: head.method, uri: plan.uri, headers: out)
        if plan.tunnel { kubeletHead.method = .POST }
        let requestHead = kubeletHead

        let relay = KubeletRelay(core: core, client: client, clientHead: head, user: user, plan: plan,
                                 upgrade: upgrade || plan.tunnel)
        if !upgrade && !plan.tunnel { ClientGoneWatch.install(on: client) }
        connect(plan: plan, egress: egress, tls: tls, on: client.eventLoop, relay: relay).whenComplete { result in
            switch result {
            case .success(let kubelet):
                relay.kubelet = kubelet
                kubelet.write(HTTPClientRequestPart.head(requestHead), promise: nil)
                if !body.isEmpty { kubelet.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil) }
                kubelet.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
                client.closeFuture.whenComplete { _ in if !relay.spliced { kubelet.close(promise: nil) } }
            case .failure(let error):
                relay.fail("\(error)")
            }
        }
        return true
    }

    /// A complete answer through the client connection's HTTP encoder.
    static func respond(_ channel: Channel, head: HTTPRequestHead, core: KubeAPIServerCore, user: KubeUser, code: Int,
                        body: [UInt8], contentType: String) {
        core.log(.init(method: head.method.rawValue, path: head.uri, code: code, user: user.name))
        var h = HTTPHeaders()
        h.add(name: "Content-Type", value: contentType)
        h.add(name: "Content-Length", value: String(body.count))
        h.add(name: "Cache-Control", value: "no-cache, private")
        if !head.isKeepAlive { h.add(name: "Connection", value: "close") }
        channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: head.version, status: .init(statusCode: code), headers: h)), promise: nil)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
        let keepAlive = head.isKeepAlive
        channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }

    /// Dials the kubelet (through the egress proxy when there is one), then TLS with the SAN check, then HTTP.
    static func connect(plan: KubeletPlan, egress: KubeAPIServer.Egress, tls: NIOSSLContext, on loop: EventLoop,
                        relay: KubeletRelay) -> EventLoopFuture<Channel> {
        let bootstrap = ClientBootstrap(group: loop)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .connectTimeout(.seconds(10))
        let dialed: EventLoopFuture<Channel>
        let target = plan.host.contains(":") ? "[\(plan.host)]:\(plan.port)" : "\(plan.host):\(plan.port)"
        switch egress {
        case .direct:
            dialed = bootstrap.connect(host: plan.host, port: plan.port)
        case .connectUnix(let path):
            dialed = bootstrap.connect(unixDomainSocketPath: path).flatMap { connectThrough($0, target: target, proxy: path) }
        case .connectTCP(let host, let port):
            dialed = bootstrap.connect(host: host, port: port).flatMap { connectThrough($0, target: target, proxy: "\(host):\(port)") }
        }
        return dialed.flatMapThrowing { channel in
            let ssl = try NIOSSLClientHandler(context: tls, serverHostname: nil)
            try channel.pipeline.syncOperations.addHandler(ssl, name: "kubelet-tls")
            try channel.pipeline.syncOperations.addHTTPClientHandlers(leftOverBytesStrategy: .forwardBytes)
            try channel.pipeline.syncOperations.addHandler(relay, name: "kubelet-relay")
            return channel
        }
    }

    /// Sends `CONNECT target HTTP/1.1` on a fresh proxy connection and waits for its 2xx.
    private static func connectThrough(_ channel: Channel, target: String, proxy: String) -> EventLoopFuture<Channel> {
        let promise = channel.eventLoop.makePromise(of: Void.self)
        let handshake = ConnectHandshake(promise: promise, proxy: proxy, target: target)
        do { try channel.pipeline.syncOperations.addHandler(handshake, name: "connect-handshake") } catch {
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(error)
        }
        channel.writeAndFlush(ByteBuffer(string: "CONNECT \(target) HTTP/1.1\r\nHost: \(target)\r\nUser-Agent: kube-apiserver(test)\r\n\r\n"),
                              promise: nil)
        return promise.futureResult.flatMap {
            channel.pipeline.removeHandler(name: "connect-handshake")
        }.map { channel }.flatMapErrorThrowing { error in
            channel.close(promise: nil)
            throw error
        }
    }
}

struct KubeletDialError: Error, CustomStringConvertible {
    let description: String
}

/// Reads the egress proxy's answer to CONNECT up to the blank line; bytes after it stay for TLS.
final class ConnectHandshake: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let promise: EventLoopPromise<Void>
    private let proxy: String, target: String
    private var buffer = ByteBuffer()
    private var done = false

    init(promise: EventLoopPromise<Void>, proxy: String, target: String) {
        self.promise = promise
        self.proxy = proxy
        self.target = target
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buf = unwrapInboundIn(data)
        if done { context.fireChannelRead(data); return }
        buffer.writeBuffer(&buf)
        let view = buffer.readableBytesView
        guard let end = view.firstRange(of: [13, 10, 13, 10]) else {
            if buffer.readableBytes > 16384 { finish(KubeletDialError(description: "proxy \(proxy) sent an oversized answer to CONNECT")) }
            return
        }
        let headText = String(decoding: view[view.startIndex..<end.lowerBound], as: UTF8.self)
        let statusLine = headText.split(separator: "\r\n").first.map(String.init) ?? ""
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        buffer.moveReaderIndex(forwardBy: end.upperBound - view.startIndex)
        guard parts.count >= 2, let code = Int(parts[1]), (200..<300).contains(code) else {
            finish(KubeletDialError(description: "proxy \(proxy) refused CONNECT \(target): \(statusLine)"))
            return
        }
        done = true
        promise.succeed(())
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if buffer.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(buffer)) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(KubeletDialError(description: "proxy \(proxy) closed the connection before answering CONNECT \(target)"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        finish(error)
        context.close(promise: nil)
    }

    private func finish(_ error: Error) {
        guard !done else { return }
        done = true
        promise.fail(error)
    }
}

/// Relays the kubelet's answer to the client: a plain response streamed chunk by chunk, or, after a 101, the two
/// connections spliced together.
final class KubeletRelay: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart

    private let core: KubeAPIServerCore
    private let client: Channel
    private let clientHead: HTTPRequestHead
    private let user: KubeUser
    private let plan: KubeletPlan
    private let upgrade: Bool
    /// Set on the event loop once connected.
    var kubelet: Channel?
    private var answered = false
    private var finished = false
    private(set) var spliced = false
    private var failure: String?
    private var switchHead: HTTPResponseHead?

    init(core: KubeAPIServerCore, client: Channel, clientHead: HTTPRequestHead, user: KubeUser, plan: KubeletPlan, upgrade: Bool) {
        self.core = core
        self.client = client
        self.clientHead = clientHead
        self.user = user
        self.plan = plan
        self.upgrade = upgrade
    }

    /// Answers 500 "error dialing backend" when nothing was sent yet, else cuts the client off.
    func fail(_ why: String) {
        guard !finished else { return }
        finished = true
        if answered { client.close(promise: nil); return }
        answered = true
        let e = APIError(code: 500, reason: "InternalError",
                         message: "error dialing backend: node \"\(plan.node)\" at \(plan.host):\(plan.port): \(why)")
        KubeletProxy.respond(client, head: clientHead, core: core, user: user, code: 500, body: e.status.bytes,
                             contentType: "application/json")
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event, let why = sanMismatch(context) {
            failure = why
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// nil when the kubelet's certificate names the address dialed.
    private func sanMismatch(_ context: ChannelHandlerContext) -> String? {
        guard let peer = try? context.pipeline.syncOperations.nioSSL_peerCertificate(),
              let cert = try? Certificate(derEncoded: try peer.toDERBytes()) else {
            return "x509: the kubelet presented no certificate"
        }
        let sans = (try? cert.extensions.subjectAlternativeNames) ?? nil
        let ip = try? TestPKI.ipBytes(plan.host)
        var names: [String] = []
        for san in sans ?? SubjectAlternativeNames([]) {
            switch san {
            case .dnsName(let d):
                if ip == nil && d.lowercased() == plan.host.lowercased() { return nil }
                names.append(d)
            case .ipAddress(let bytes):
                if let ip, Array(bytes.bytes) == ip { return nil }
                names.append(bytes.bytes.count == 4 ? bytes.bytes.map(String.init).joined(separator: ".") : "\(Array(bytes.bytes))")
            default: break
            }
        }
        return "x509: certificate is valid for \(names.joined(separator: ", ")), not \(plan.host)"
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !finished else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            if upgrade && head.status == .switchingProtocols {
                switchHead = head   // spliced at .end, which the decoder sends right after a 101
                return
            }
            answered = true
            core.log(.init(method: clientHead.method.rawValue, path: clientHead.uri, code: Int(head.status.code), user: user.name))
            var h = HTTPHeaders()
            let drop: Set<String> = ["connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection", "te", "trailer"]
            for (name, value) in head.headers where !drop.contains(name.lowercased()) { h.add(name: name, value: value) }
            if !clientHead.isKeepAlive { h.add(name: "Connection", value: "close") }
            client.writeAndFlush(HTTPServerResponsePart.head(HTTPResponseHead(version: clientHead.version, status: head.status, headers: h)), promise: nil)
        case .body(let buf):
            client.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(buf)), promise: nil)
        case .end:
            if let h = switchHead {
                splice(context: context, head: h)
                return
            }
            finished = true
            let keepAlive = clientHead.isKeepAlive
            let client = self.client
            client.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { _ in
                if !keepAlive { client.close(promise: nil) }
            }
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if failure == nil { failure = "\(error)" }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !finished {
            fail(failure ?? "the kubelet closed the connection before answering")
        }
        context.fireChannelInactive()
    }

    /// The kubelet switched protocols: hand its 101 (or, for a tunneled port-forward, a WebSocket 101) to the
    /// client, drop HTTP from both connections and glue them together.
    private func splice(context: ChannelHandlerContext, head: HTTPResponseHead) {
        finished = true
        spliced = true
        answered = true
        core.log(.init(method: clientHead.method.rawValue, path: clientHead.uri, code: 101, user: user.name))
        let kubelet = context.channel
        let clientSide: SpliceEnd & ChannelHandler
        var text = "HTTP/1.1 101 Switching Protocols\r\n"
        if plan.tunnel {
            let key = clientHead.headers["sec-websocket-key"].first ?? ""
            let digest = Insecure.SHA1.hash(data: Data((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))
            text += "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \(Data(digest).base64EncodedString())\r\n"
            text += "Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io\r\n\r\n"
            clientSide = WebSocketSpliceEnd()
        } else {
            for (name, value) in head.headers { text += "\(name): \(value)\r\n" }
            text += "\r\n"
            clientSide = RawSpliceEnd()
        }
        let kubeletSide = RawSpliceEnd()
        clientSide.partner = kubeletSide
        kubeletSide.partner = clientSide
        do {
            // Client connection: raw bytes (or WebSocket frames) from here on.
            let cp = client.pipeline.syncOperations
            try cp.addHandler(clientSide, name: "kubelet-splice")
            for ctx in [try? cp.context(handlerType: KubeAPIHTTPHandler.self),
                        try? cp.context(handlerType: HTTPServerProtocolErrorHandler.self),
                        try? cp.context(handlerType: HTTPServerPipelineHandler.self),
                        try? cp.context(handlerType: HTTPResponseEncoder.self),
                        try? cp.context(handlerType: NIOHTTPResponseHeadersValidator.self),
                        try? cp.context(handlerType: ByteToMessageHandler<HTTPRequestDecoder>.self)] {
                if let ctx { cp.removeHandler(context: ctx, promise: nil) }
            }
            _ = client.setOption(.allowRemoteHalfClosure, value: true)
            client.writeAndFlush(ByteBuffer(string: text), promise: nil)
            // Kubelet connection: leftover bytes after the 101 reach the splice end when the decoder goes.
            let kp = kubelet.pipeline.syncOperations
            try kp.addHandler(kubeletSide, name: "kubelet-splice")
            kp.removeHandler(context: context, promise: nil)
            if let enc = try? kp.context(handlerType: HTTPRequestEncoder.self) { kp.removeHandler(context: enc, promise: nil) }
            if let val = try? kp.context(handlerType: NIOHTTPRequestHeadersValidator.self) { kp.removeHandler(context: val, promise: nil) }
            if let dec = try? kp.context(handlerType: ByteToMessageHandler<HTTPResponseDecoder>.self) { kp.removeHandler(context: dec, promise: nil) }
        } catch {
            client.close(promise: nil)
            kubelet.close(promise: nil)
        }
    }
}

// MARK: - Client gone

/// Keeps reading the client's connection while a kubelet answer streams back, as Go's HTTP server does in the
/// background: HTTPServerPipelineHandler stops reading once a request has ended until its response is complete,
/// so without this a client that leaves a followed log is never noticed and the kubelet's stream never ends.
/// Sits in front of the pipeline handler; what it reads (a pipelined request) still goes on to be buffered there.
final class ClientGoneWatch: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny

    static func install(on channel: Channel) {
        let ops = channel.pipeline.syncOperations
        guard (try? ops.handler(type: ClientGoneWatch.self)) == nil,
              let pipelineHandler = try? ops.handler(type: HTTPServerPipelineHandler.self) else { return }
        try? ops.addHandler(ClientGoneWatch(), position: .before(pipelineHandler))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { context.read() }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()
        if context.channel.isActive { context.read() }
    }
}

// MARK: - Splicing

/// One end of two glued connections: what it reads goes to the partner's connection, and closes follow.
class SpliceEnd: @unchecked Sendable {
    var partner: SpliceEnd?
    var context: ChannelHandlerContext?
    var pendingRead = false
    var outputClosed = false

    /// Writes bytes read on the other connection.
    func send(_ bytes: ByteBuffer) {}
    func flush() { context?.flush() }
    /// The other side will send nothing more. Waits for the bytes already queued: NIO turns a half-close of a
    /// connection whose input already ended into a full close, which drops queued writes (Go's proxy copies
    /// everything before it closes).
    func closeOutput() {
        guard let context, !outputClosed else { return }
        outputClosed = true
        let channel = context.channel
        afterQueuedWrites { channel.close(mode: .output).whenFailure { _ in channel.close(promise: nil) } }
    }
    /// Closes once the bytes already queued are written.
    func close() {
        guard let channel = context?.channel else { return }
        afterQueuedWrites { channel.close(promise: nil) }
    }
    /// Runs `body` once every write queued so far completed (an empty write's promise completes after them).
    private func afterQueuedWrites(_ body: @escaping () -> Void) {
        guard let context else { return }
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(NIOAny(ByteBuffer()), promise: done)
        done.futureResult.whenComplete { _ in body() }
    }
    var isWritable: Bool { context?.channel.isWritable ?? false }
    /// The partner became writable again: read if a read was held back.
    func resumeReading() {
        guard let context, pendingRead else { return }
        pendingRead = false
        context.read()
    }
}

/// A splice end on a byte stream.
final class RawSpliceEnd: SpliceEnd, ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    override func send(_ bytes: ByteBuffer) { context?.write(wrapOutboundOut(bytes), promise: nil) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { partner?.send(unwrapInboundIn(data)) }
    func channelReadComplete(context: ChannelHandlerContext) { partner?.flush() }
    func channelInactive(context: ChannelHandlerContext) {
        partner?.flush()
        partner?.close()
        context.fireChannelInactive()
    }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event { partner?.flush(); partner?.closeOutput() }
        context.fireUserInboundEventTriggered(event)
    }
    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }
    func read(context: ChannelHandlerContext) {
        if let partner, !partner.isWritable, partner.context != nil { pendingRead = true; return }
        context.read()
    }
}

/// A splice end on a WebSocket whose binary messages carry a byte stream (tunneled SPDY): client frames are
/// unmasked and their payloads passed on, bytes from the partner go out as binary frames; ping → pong, close →
/// close (and the partner's output is closed).
final class WebSocketSpliceEnd: SpliceEnd, ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private var buffer = ByteBuffer()
    private var closeSent = false

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    override func send(_ bytes: ByteBuffer) { frame(opcode: 2, payload: bytes) }

    override func closeOutput() {
        guard !closeSent else { return }
        closeSent = true
        var payload = ByteBuffer()
        payload.writeInteger(UInt16(1000))
        frame(opcode: 8, payload: payload)
        context?.flush()
    }

    private func frame(opcode: UInt8, payload: ByteBuffer) {
        guard let context else { return }
        var out = context.channel.allocator.buffer(capacity: payload.readableBytes + 10)
        out.writeInteger(0x80 | opcode)
        let n = payload.readableBytes
        if n < 126 { out.writeInteger(UInt8(n)) }
        else if n <= 0xFFFF { out.writeInteger(UInt8(126)); out.writeInteger(UInt16(n)) }
        else { out.writeInteger(UInt8(127)); out.writeInteger(UInt64(n)) }
        var p = payload
        out.writeBuffer(&p)
        context.write(wrapOutboundOut(out), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buf = unwrapInboundIn(data)
        buffer.writeBuffer(&buf)
        while let (opcode, payload) = nextFrame() {
            switch opcode {
            case 0, 2: partner?.send(payload)                         // continuation, binary
            case 9: frame(opcode: 10, payload: payload); context.flush()   // ping → pong
            case 10: break
            case 8:
                if !closeSent { closeSent = true; frame(opcode: 8, payload: payload); context.flush() }
                partner?.flush()
                partner?.closeOutput()
            default:
                context.close(promise: nil)   // text frames are not part of the tunnel
                return
            }
        }
        buffer.discardReadBytes()
    }

    /// The next complete frame (payload unmasked), consuming it.
    private func nextFrame() -> (UInt8, ByteBuffer)? {
        var b = buffer
        guard let b0 = b.readInteger(as: UInt8.self), let b1 = b.readInteger(as: UInt8.self) else { return nil }
        var length = UInt64(b1 & 0x7F)
        if length == 126 { guard let l = b.readInteger(as: UInt16.self) else { return nil }; length = UInt64(l) }
        else if length == 127 { guard let l = b.readInteger(as: UInt64.self) else { return nil }; length = l }
        var mask: [UInt8] = []
        if b1 & 0x80 != 0 { guard let m = b.readBytes(length: 4) else { return nil }; mask = m }
        guard length <= UInt64(b.readableBytes), var payload = b.readSlice(length: Int(length)) else { return nil }
        if !mask.isEmpty {
            var bytes = payload.readBytes(length: payload.readableBytes) ?? []
            for i in bytes.indices { bytes[i] ^= mask[i & 3] }
            payload = ByteBuffer(bytes: bytes)
        }
        buffer = b
        return (b0 & 0x0F, payload)
    }

    func channelReadComplete(context: ChannelHandlerContext) { partner?.flush() }
    func channelInactive(context: ChannelHandlerContext) {
        partner?.flush()
        partner?.close()
        context.fireChannelInactive()
    }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event { partner?.flush(); partner?.close() }
        context.fireUserInboundEventTriggered(event)
    }
    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }
    func read(context: ChannelHandlerContext) {
        if let partner, !partner.isWritable, partner.context != nil { pendingRead = true; return }
        context.read()
    }
}
