// `edgectl join`: turns this gateway into a node of a Kubernetes cluster (kubeadm-style bootstrap token).

import ArgumentParser
import EdgedControl

struct JoinCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "join",
        abstract: "Join this node to a Kubernetes cluster with a bootstrap token.",
        discussion: """
            edged fetches the cluster CA from kube-public/cluster-info, checks it against the token's signature and \
            --ca-cert-hash, makes a key on this device, and gets a client certificate through a CSR. Running join \
            again with the same server is harmless. `kubeadm token create --print-join-command` prints the token and \
            the CA hash.
            """)

    @Option(name: .long, help: "The API server, e.g. https://10.0.0.1:6443.")
    var server: String

    @Option(name: .long, help: "A bootstrap token (abcdef.0123456789abcdef).")
    var token: String

    @Option(name: .customLong("ca-cert-hash"), help: "Pin of the cluster CA, sha256:<hex> (repeatable; strongly recommended).")
    var caCertHashes: [String] = []

    @Option(name: .long, help: "Node labels, k=v,k2=v2.")
    var labels: String?

    @Option(name: .customLong("node-pool"), help: "Node pool (label apps.openyurt.io/nodepool).")
    var nodePool: String?

    @Option(name: .long, help: "Taints to register with, key=value:Effect (repeatable).")
    var taint: [String] = []

    @Option(name: .customLong("approval-timeout"), help: "Seconds to wait for the CSR to be approved.")
    var approvalTimeout: Int = 120

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        guard server.hasPrefix("https://") else {
            throw ValidationError("--server must be an https:// URL, e.g. https://10.0.0.1:6443")
        }
        guard approvalTimeout > 0 else { throw ValidationError("--approval-timeout must be at least 1") }
        _ = try parsedLabels()
    }

    func parsedLabels() throws -> [String: String] {
        var out: [String: String] = [:]
        for item in (labels ?? "").split(separator: ",") where !item.isEmpty {
            let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard kv.count == 2, !kv[0].isEmpty else {
                throw ValidationError("--labels: \"\(item)\" is not key=value")
            }
            out[String(kv[0])] = String(kv[1])
        }
        return out
    }

    func run() async throws {
        let request = JoinRequest(server: server, token: token, caCertHashes: caCertHashes, labels: try parsedLabels(),
                                  nodePool: nodePool, taints: taint, approvalTimeoutSeconds: approvalTimeout)
        let answer = try await global.client.join(request)
        if answer.newlyJoined {
            Output.out("joined \(answer.server) as node \(answer.nodeName)\(answer.csrName.map { " (CSR \($0))" } ?? ""); certificate valid until \(answer.certificateNotAfter)\n")
            Output.out("check with: kubectl get node \(answer.nodeName)\n")
        } else {
            Output.out("already joined \(answer.server) as node \(answer.nodeName); certificate valid until \(answer.certificateNotAfter)\n")
        }
    }
}
