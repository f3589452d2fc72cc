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

    // `--autonomy` alone is `--autonomy=0` (Edgectl.rewritingBareAutonomy: ArgumentParser has no optional values).
    @Option(name: .long, help: ArgumentHelp(
        "Node autonomy (the default, forever): the cloud keeps this node's pods through an outage of DURATION, \"0\" (or --autonomy alone) for forever, or a duration such as 72h. Registers the Node with annotation node.openyurt.io/autonomy-duration; once the Node exists, change it with kubectl annotate.",
        valueName: "duration"))
    var autonomy: String?

    @Flag(name: .customLong("no-autonomy"), help: "Register the Node without the autonomy annotation: the cloud deletes its pods once their tolerations run out in an outage (300 s by default).")
    var noAutonomy = false

    @OptionGroup var global: GlobalOptions

    func validate() throws {
        guard server.hasPrefix("https://") else {
            throw ValidationError("--server must be an https:// URL, e.g. https://10.0.0.1:6443")
        }
        if noAutonomy && autonomy != nil {
            throw ValidationError("--autonomy and --no-autonomy contradict each other: give one of them (neither: autonomous, forever)")
        }
        if let autonomy, let problem = JoinRequest.autonomyProblem(autonomy) { throw ValidationError(problem) }
        guard approvalTimeout > 0 else { throw ValidationError("--approval-timeout must be at least 1") }
        _ = try parsedLabels()
    }

    /// The annotation value to register with; nil: none.
    var autonomyValue: String? { noAutonomy ? nil : autonomy ?? JoinRequest.defaultAutonomy }

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
                                  nodePool: nodePool, taints: taint, approvalTimeoutSeconds: approvalTimeout,
                                  autonomy: autonomyValue)
        let answer = try await global.client.join(request)
        if answer.newlyJoined {
            Output.out("joined \(answer.server) as node \(answer.nodeName)\(answer.csrName.map { " (CSR \($0))" } ?? ""); certificate valid until \(answer.certificateNotAfter)\n")
            Output.out("autonomy: \(autonomyValue.map { "node.openyurt.io/autonomy-duration=\($0) on the Node (\($0 == "0" ? "forever" : $0)); the cloud keeps the pods through an outage once the autonomy controller runs (deploy/autonomy-controller.yaml)" } ?? "off (--no-autonomy)")\n")
            Output.out("check with: kubectl get node \(answer.nodeName)\n")
        } else {
            Output.out("already joined \(answer.server) as node \(answer.nodeName); certificate valid until \(answer.certificateNotAfter)\n")
            if autonomy != nil || noAutonomy {
                Output.out("autonomy: kept for when edged registers the Node again; the Node's annotation stays as it is: change it with kubectl annotate node \(answer.nodeName) node.openyurt.io/autonomy-duration=DURATION --overwrite\n")
            }
        }
    }
}
