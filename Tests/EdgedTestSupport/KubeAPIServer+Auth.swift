// Authentication (client certificates, bootstrap tokens, ServiceAccount tokens, anonymous), a fixed authorizer in
// front of RBAC (KubeAPIServer+RBAC.swift), the TokenRequest API and the kube-public/cluster-info ConfigMap with its JWS signatures.

import Crypto
import Foundation
import X509

extension KubeAPIServerCore {
    // MARK: Authentication

    /// The caller of a request: the client certificate's subject when one verified against the CA, else the bearer
    /// token's user, else anonymous. nil means "present but invalid credentials" (401).
    func authenticate(peer: Certificate?, authorization: String?) -> KubeUser? {
        if let peer, isValidClientCertificate(peer) {
            var cn = "", orgs: [String] = []
            for rdn in peer.subject {
                for attr in rdn {
                    let text = String(describing: attr.value)
                    if attr.type == .RDNAttributeType.commonName { cn = text }
                    if attr.type == .RDNAttributeType.organizationName { orgs.append(text) }
                }
            }
            return KubeUser(name: cn, groups: orgs + ["system:authenticated"])
        }
        if let authorization, authorization.lowercased().hasPrefix("bearer ") {
            let token = String(authorization.dropFirst(7)).trimmingCharacters(in: .whitespaces)
            store.lock.lock()
            defer { store.lock.unlock() }
            return tokenUser(token)
        }
        if peer != nil { return nil }   // a certificate we did not issue, and no token
        return .anonymous
    }

    /// The user of a bearer token: static (addToken), bootstrap or ServiceAccount. The store lock must be held.
    func tokenUser(_ token: String) -> KubeUser? {
        staticTokenUser(token) ?? bootstrapTokenUser(token) ?? serviceAccountTokenUser(token)
    }

    /// Signed by our CA, within its validity, and made for client auth.
    func isValidClientCertificate(_ cert: Certificate) -> Bool {
        guard cert.issuer == pki.certificate.subject,
              pki.certificate.publicKey.isValidSignature(cert.signature, for: cert) else { return false }
        let now = Date()
        guard cert.notValidBefore <= now, now <= cert.notValidAfter else { return false }
        if let eku = try? cert.extensions.extendedKeyUsage, !eku.contains(.clientAuth) { return false }
        return true
    }

    /// "id.secret" matching a kube-system bootstrap-token-<id> Secret that allows authentication and has not expired.
    private func bootstrapTokenUser(_ token: String) -> KubeUser? {
        let parts = token.split(separator: ".")
        guard parts.count == 2, parts[0].count == 6, parts[1].count == 16 else { return nil }
        guard let secret = store.get(Self.secrets, namespace: "kube-system", name: "bootstrap-token-\(parts[0])"),
              secret["type"]?.string == "bootstrap.kubernetes.io/token" else { return nil }
        func field(_ k: String) -> String? {
            secret[path: ["data", k]]?.string.flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) }
        }
        guard field("token-secret") == String(parts[1]), field("usage-bootstrap-authentication") == "true" else { return nil }
        if let exp = field("expiration"), let date = try? Date(exp, strategy: .iso8601), date < Date() { return nil }
        let extra = (field("auth-extra-groups") ?? "").split(separator: ",").map(String.init)
        return KubeUser(name: "system:bootstrap:\(parts[0])", groups: ["system:bootstrappers"] + extra + ["system:authenticated"])
    }

    // MARK: Authorization

    /// The fixed policy and the node authorizer (see the file comment of KubeAPIServer.swift), then RBAC: a 403
    /// carries the real message, `<resource> ["<name>"] is forbidden: User "<u>" cannot <verb> resource "<res>" in API
    /// group "<g>" <scope>[: <reason>]`. `query` matters for list/watch (field selectors, see requestName).
    func authorize(_ user: KubeUser, verb: String, target t: APITarget, query: [String: String] = [:]) throws {
        let r = t.resource
        let name = Self.requestName(t, verb: verb, query: query)
        let (ok, reason) = allowed(user, verb: verb, target: t, name: name, query: query)
        if ok { return }
        // Node,RBAC: what the fixed policy and the node authorizer do not allow, RBAC may (KubeAPIServer+RBAC.swift).
        let namespace = Self.requestNamespace(t)
        if rbacAllows(user: user.name, groups: user.groups, verb: verb, group: r.group, resource: r.plural,
                      subresource: t.subresource, name: name, namespace: namespace) { return }
        let res = t.subresource.map { "\(r.plural)/\($0)" } ?? r.plural
        let qualified = r.group.isEmpty ? r.plural : "\(r.plural).\(r.group)"
        let scope = namespace.map { "in the namespace \"\($0)\"" } ?? "at the cluster scope"
        let subject = name.map { "\(qualified) \"\($0)\"" } ?? qualified
        var details: KJSON = .object(["kind": .string(r.plural)])
        if let n = name { details["name"] = .string(n) }
        if !r.group.isEmpty { details["group"] = .string(r.group) }
        throw APIError(code: 403, reason: "Forbidden",
                       message: "\(subject) is forbidden: User \"\(user.name)\" cannot \(verb) resource \"\(res)\" in API group \"\(r.group)\" \(scope)" + (reason.isEmpty ? "" : ": \(reason)"),
                       details: details)
    }

    private func allowed(_ user: KubeUser, verb: String, target t: APITarget, name: String?, query: [String: String]) -> (Bool, String) {
        if user.groups.contains("system:masters") { return (true, "") }
        if options.nodeAuthorizer {
            if let node = Self.nodeName(of: user) {
                let decision = nodeAuthorize(node: node, verb: verb, target: t, name: name, query: query)
                // kubeadm's RBAC Roles kubeadm:kubelet-config and kubeadm:nodes-kubeadm-config (group system:nodes).
                let kubeadmConfig = t.resource.plural == "configmaps" && t.namespace == "kube-system" && verb == "get"
                    && t.subresource == nil && ["kubelet-config", "kubeadm-config"].contains(t.name ?? "")
                return kubeadmConfig ? (true, "") : decision
            }
        } else if user.groups.contains("system:nodes") || user.name.hasPrefix("system:node:") {
            return (true, "")
        }
        let clusterInfo = t.resource.plural == "configmaps" && t.namespace == "kube-public" && t.name == "cluster-info"
            && t.subresource == nil && verb == "get"
        if user.name == KubeUser.anonymous.name { return (clusterInfo, "") }
        if user.groups.contains("system:bootstrappers") {
            if clusterInfo { return (true, "") }
            return (t.resource.plural == "certificatesigningrequests" && t.subresource == nil
                && ["create", "get", "list", "watch"].contains(verb), "")
        }
        return (false, "")
    }

    /// /version and health checks are public; discovery needs an authenticated user (system:discovery).
    func authorizeNonResource(_ user: KubeUser, path: String) throws {
        let publicPaths = ["/version", "/healthz", "/livez", "/readyz"]
        if publicPaths.contains(path) || user.name != KubeUser.anonymous.name { return }
        throw APIError(code: 403, reason: "Forbidden",
                       message: "forbidden: User \"\(user.name)\" cannot get path \"\(path)\"", details: .object([:]))
    }

    // MARK: Bootstrap tokens and cluster-info

    /// Stores a kube-system bootstrap-token-<id> Secret like `kubeadm token create` (both usages, kubeadm's group).
    func addBootstrapToken(id: String, secret: String, expires: Date?) throws {
        var data: [String: KJSON] = [:]
        func put(_ k: String, _ v: String) { data[k] = .string(Data(v.utf8).base64EncodedString()) }
        put("token-id", id)
        put("token-secret", secret)
        put("usage-bootstrap-authentication", "true")
        put("usage-bootstrap-signing", "true")
        put("auth-extra-groups", "system:bootstrappers:kubeadm:default-node-token")
        if let expires { put("expiration", Self.timestamp(expires)) }
        let name = "bootstrap-token-\(id)"
        let body: KJSON = .object([
            "metadata": .object(["name": .string(name), "namespace": .string("kube-system")]),
            "type": .string("bootstrap.kubernetes.io/token"), "data": .object(data),
        ])
        if store.get(Self.secrets, namespace: "kube-system", name: name) != nil {
            _ = try delete(Self.secrets, namespace: "kube-system", name: name, options: .object([:]), query: [:])
        }
        _ = try create(Self.secrets, namespace: "kube-system", body: body, user: .internalAdmin)
    }

    /// The kubeconfig kubeadm publishes in cluster-info: the server and the CA, nothing else.
    var clusterInfoKubeconfig: String {
        """
        apiVersion: v1
        clusters:
        - cluster:
            certificate-authority-data: \(Data(pki.caPEM.utf8).base64EncodedString())
            server: https://\(serverAddress)
          name: ""
        contexts: null
        current-context: ""
        kind: Config
        preferences: {}
        users: null

        """
    }

    /// Writes kube-public/cluster-info: data.kubeconfig plus one jws-kubeconfig-<id> per signing bootstrap token,
    /// as kube-controller-manager's bootstrapsigner does.
    func refreshClusterInfo() throws {
        let kubeconfig = clusterInfoKubeconfig
        var data: [String: KJSON] = ["kubeconfig": .string(kubeconfig)]
        for (_, secret) in store.all(Self.secrets, namespace: "kube-system") {
            guard secret["type"]?.string == "bootstrap.kubernetes.io/token" else { continue }
            func field(_ k: String) -> String? {
                secret[path: ["data", k]]?.string.flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) }
            }
            guard let id = field("token-id"), let sec = field("token-secret"), field("usage-bootstrap-signing") == "true" else { continue }
            if let exp = field("expiration"), let date = try? Date(exp, strategy: .iso8601), date < Date() { continue }
            data["jws-kubeconfig-\(id)"] = .string(Self.detachedJWS(payload: kubeconfig, tokenID: id, secret: sec))
        }
        let body: KJSON = .object(["metadata": .object(["name": .string("cluster-info"), "namespace": .string("kube-public")]),
                                   "data": .object(data)])
        if let old = store.get(Self.configMaps, namespace: "kube-public", name: "cluster-info") {
            var new = old
            new["data"] = .object(data)
            if new != old { store.commit(.modified, Self.configMaps, namespace: "kube-public", name: "cluster-info", object: new) }
        } else {
            _ = try create(Self.configMaps, namespace: "kube-public", body: body, user: .internalAdmin)
        }
    }

    /// A detached compact JWS (HS256, key = token secret, header {"alg":"HS256","kid":id}): "<header>..<signature>".
    static func detachedJWS(payload: String, tokenID: String, secret: String) -> String {
        let header = base64URL(Data("{\"alg\":\"HS256\",\"kid\":\"\(tokenID)\"}".utf8))
        let signingInput = header + "." + base64URL(Data(payload.utf8))
        let mac = HMAC<SHA256>.authenticationCode(for: Data(signingInput.utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return header + ".." + base64URL(Data(mac))
    }

    static func base64URL(_ d: Data) -> String {
        d.base64EncodedString().split(separator: "=").joined()
            .map { $0 == "+" ? "-" : ($0 == "/" ? "_" : $0) }.reduce(into: "") { $0.append($1) }
    }

    static func fromBase64URL(_ s: Substring) -> Data? {
        var t = s.map { $0 == "-" ? "+" : ($0 == "_" ? "/" : $0) }.reduce(into: "") { $0.append($1) }
        while t.count % 4 != 0 { t += "=" }
        return Data(base64Encoded: t)
    }

    // MARK: ServiceAccount tokens

    /// POST serviceaccounts/NAME/token: a JWT (HS256 with a per-server key) for the ServiceAccount, optionally bound
    /// to a pod; valid until it expires or the ServiceAccount/pod is gone.
    func tokenRequest(_ t: APITarget, _ req: APIRequest) throws -> KJSON {
        let ns = t.namespace!, name = t.name!
        guard let sa = store.get(Self.serviceAccounts, namespace: ns, name: name) else {
            throw APIError.notFound(Self.serviceAccounts, name)
        }
        var body = try parseBody(req.body)
        let seconds = body[path: ["spec", "expirationSeconds"]]?.int ?? 3600
        if seconds < 600 {
            throw APIError.invalid(kind: "TokenRequest", name: name, group: "authentication.k8s.io", [
                .init(reason: "FieldValueInvalid", field: "spec.expirationSeconds",
                      message: "Invalid value: \(seconds): may not specify a duration less than 10 minutes")])
        }
        let audiences = body[path: ["spec", "audiences"]]?.array.flatMap { $0.isEmpty ? nil : $0 }
            ?? [.string("https://kubernetes.default.svc.cluster.local")]
        var k8s: KJSON = .object(["namespace": .string(ns), "serviceaccount": .object([
            "name": .string(name), "uid": sa[path: ["metadata", "uid"]] ?? .string("")])])
        var boundPod = false
        if let ref = body[path: ["spec", "boundObjectRef"]], ref["kind"]?.string == "Pod", let podName = ref["name"]?.string {
            guard let pod = store.get(Self.pods, namespace: ns, name: podName) else { throw APIError.notFound(Self.pods, podName) }
            if let uid = ref["uid"]?.string, !uid.isEmpty, uid != pod[path: ["metadata", "uid"]]?.string {
                throw APIError.conflict(Self.pods, podName, "the UID in the bound object reference (\(uid)) does not match the UID in record")
            }
            k8s["pod"] = .object(["name": .string(podName), "uid": pod[path: ["metadata", "uid"]] ?? .string("")])
            // ServiceAccountTokenPodNodeInfo: the node the pod is bound to.
            if let nodeName = pod[path: ["spec", "nodeName"]]?.string, !nodeName.isEmpty,
               let node = store.get(KubeResource.find(kind: "Node")!, namespace: nil, name: nodeName) {
                k8s["node"] = .object(["name": .string(nodeName), "uid": node[path: ["metadata", "uid"]] ?? .string("")])
            }
            boundPod = true
        }
        let now = Date()
        let exp = now.addingTimeInterval(Double(seconds))
        // --service-account-extend-token-expiration (pkg/registry/core/serviceaccount/storage/token.go): a pod-bound
        // request for exactly 3607 s with the API server's audience gets a token valid for a year with a warnafter
        // claim at the requested time; the answer's expirationTimestamp still says the requested time.
        var tokenExp = exp
        if options.extendServiceAccountTokenExpiration, boundPod, seconds == 3607,
           audiences == [.string("https://kubernetes.default.svc.cluster.local")] {
            tokenExp = now.addingTimeInterval(365 * 24 * 3600)
            k8s["warnafter"] = .int(Int(exp.timeIntervalSince1970))
        }
        let claims: KJSON = .object([
            "aud": .array(audiences), "exp": .int(Int(tokenExp.timeIntervalSince1970)), "iat": .int(Int(now.timeIntervalSince1970)),
            "nbf": .int(Int(now.timeIntervalSince1970)), "iss": .string("https://kubernetes.default.svc.cluster.local"),
            "sub": .string("system:serviceaccount:\(ns):\(name)"), "kubernetes.io": k8s,
            "jti": .string(UUID().uuidString.lowercased()),
        ])
        let header = Self.base64URL(Data("{\"alg\":\"HS256\",\"typ\":\"JWT\"}".utf8))
        let input = header + "." + Self.base64URL(claims.data)
        let sig = HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: tokenKey)
        body["kind"] = .string("TokenRequest")
        body["apiVersion"] = .string("authentication.k8s.io/v1")
        body["metadata"] = .object(["name": .string(name), "namespace": .string(ns), "creationTimestamp": .null])
        body[path: ["spec", "audiences"]] = .array(audiences)
        body[path: ["spec", "expirationSeconds"]] = .int(seconds)
        body["status"] = .object(["token": .string(input + "." + Self.base64URL(Data(sig))),
                                  "expirationTimestamp": .string(Self.timestamp(exp))])
        return body
    }

    /// The ServiceAccount user of a token we issued, if its signature holds, it has not expired, and the
    /// ServiceAccount (and bound pod) still exist with the same uid.
    private func serviceAccountTokenUser(_ token: String) -> KubeUser? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let sig = Self.fromBase64URL(parts[2]),
              HMAC<SHA256>.isValidAuthenticationCode(sig, authenticating: Data((parts[0] + "." + parts[1]).utf8), using: tokenKey),
              let payload = Self.fromBase64URL(parts[1]), let claims = try? KJSON.parse(payload),
              let exp = claims["exp"]?.int, Double(exp) > Date().timeIntervalSince1970,
              let ns = claims[path: ["kubernetes.io", "namespace"]]?.string,
              let name = claims[path: ["kubernetes.io", "serviceaccount", "name"]]?.string,
              let sa = store.get(Self.serviceAccounts, namespace: ns, name: name),
              sa[path: ["metadata", "uid"]] == claims[path: ["kubernetes.io", "serviceaccount", "uid"]] else { return nil }
        if let podName = claims[path: ["kubernetes.io", "pod", "name"]]?.string {
            guard let pod = store.get(Self.pods, namespace: ns, name: podName),
                  pod[path: ["metadata", "uid"]] == claims[path: ["kubernetes.io", "pod", "uid"]] else { return nil }
        }
        return KubeUser(name: "system:serviceaccount:\(ns):\(name)",
                        groups: ["system:serviceaccounts", "system:serviceaccounts:\(ns)", "system:authenticated"])
    }
}
