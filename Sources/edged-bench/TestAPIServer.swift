// `edged-bench test-apiserver --out DIR` (hidden): the test API server (EdgedTestSupport's KubeAPIServer, with the
// node lifecycle, taint-eviction, CSR auto-approval and the Node authorizer as the tests run it) as a process, so
// a shell script can join an edged that runs elsewhere — a VM reaching this host at 10.0.2.2 through qemu's
// user-mode networking (cross/vm/joined-step.sh) — and drive it with the real kubectl. It is not kube-apiserver:
// see Tests/EdgedTestSupport/KubeAPIServer.swift for what it copies.
//
// Writes into DIR, `ready` last (and removes `ready` when it stops):
//   ca.crt             the cluster CA (PEM)
//   admin.kubeconfig   kubernetes-admin (system:masters) for kubectl on this host, server https://127.0.0.1:PORT
//   token              a fresh bootstrap token id.secret (group system:bootstrappers)
//   ca-cert-hash       sha256:<hex> for `edgectl join --ca-cert-hash`
//   server             the URL a node joins: https://<first --san, else the listen address>:PORT
//   join.env           the same as shell assignments: EDGED_API_SERVER, EDGED_API_TOKEN, EDGED_API_CA_CERT_HASH,
//                      EDGED_API_KUBECONFIG, EDGED_API_PORT, EDGED_API_PID
//   ready              the server URL, once it serves; also printed as one line "ready <server URL>"
// Runs until SIGTERM or SIGINT.

import ArgumentParser
import EdgedDaemon
import EdgedTestSupport
import Foundation

struct TestAPIServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test-apiserver",
        abstract: "Run the test Kubernetes API server until SIGTERM/SIGINT, for joining an edged elsewhere (a VM) to it.",
        discussion: """
            Writes ca.crt, admin.kubeconfig, token, ca-cert-hash, server, join.env and, last, ready into --out. \
            A node joins with: edgectl join --server "$(cat DIR/server)" --token "$(cat DIR/token)" \
            --ca-cert-hash "$(cat DIR/ca-cert-hash)". Not kube-apiserver: see Tests/EdgedTestSupport/KubeAPIServer.swift.
            """,
        shouldDisplay: false)

    @Option(help: "Address and port to listen on, HOST:PORT (PORT 0: a free one; [v6]:PORT for IPv6).")
    var listen = "127.0.0.1:0"

    @Option(help: "Another name for the serving certificate, an IP address or DNS name (repeatable); the first is the host a node joins, e.g. 10.0.2.2 for a qemu guest on user-mode networking.")
    var san: [String] = []

    @Option(help: "Directory for the CA, kubeconfig, token and ready files (created if missing; its parent must exist).")
    var out: String

    @Flag(help: "Print one line per request to stdout.")
    var requestLog = false

    @Option(help: ArgumentHelp("Also write the demo busybox image (\(Demo.imageReference), from this host's busybox-static, for this host's architecture) as an OCI archive to this file, for `edgectl images import`.", valueName: "file"))
    var imageArchive: String?

    /// (host, port) of --listen.
    static func parseListen(_ text: String) throws -> (String, Int) {
        let host: Substring, port: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw ValidationError("--listen \(text): write an IPv6 address as [ADDRESS]:PORT") }
            port = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else {
                throw ValidationError("--listen \(text) is not HOST:PORT, e.g. 127.0.0.1:0 (0: a free port) or [::1]:6443")
            }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, (try? TestPKI.ipBytes(String(host))) != nil else {
            throw ValidationError("--listen \(text): \"\(host)\" is not an IP address; listen on an address such as 127.0.0.1 (give names with --san)")
        }
        guard let p = Int(port), (0...65535).contains(p) else {
            throw ValidationError("--listen \(text): \"\(port)\" is not a port number (0-65535; 0: a free one)")
        }
        return (String(host), p)
    }

    func validate() throws {
        _ = try Self.parseListen(listen)
        let dnsCharacters = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")
        for name in san where (try? TestPKI.ipBytes(name)) == nil {
            guard !name.isEmpty, name.allSatisfy(dnsCharacters.contains), !name.hasPrefix("."), !name.hasPrefix("-") else {
                throw ValidationError("--san \"\(name)\" is neither an IP address nor a DNS name (e.g. --san 10.0.2.2)")
            }
        }
    }

    /// A failure at run time: ArgumentParser prints it as "Error: <message>" without the usage text.
    struct Problem: Error, CustomStringConvertible {
        let description: String
        init(_ message: String) { description = message }
    }

    /// A bootstrap token "id.secret" ([a-z0-9]{6}.[a-z0-9]{16}) from the system's random source.
    static func randomToken() -> (id: String, secret: String) {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        var rng = SystemRandomNumberGenerator()
        func draw(_ n: Int) -> String { String((0..<n).map { _ in alphabet.randomElement(using: &rng)! }) }
        return (draw(6), draw(16))
    }

    func run() async throws {
        let (host, port) = try Self.parseListen(listen)
        let fm = FileManager.default
        if mkdir(out, 0o755) != 0, errno != EEXIST {
            throw Problem("cannot create --out \(out): \(String(cString: strerror(errno))); give a directory this user may write (its parent must exist)")
        }
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: out, isDirectory: &isDir), isDir.boolValue else {
            throw Problem("--out \(out) is a file, not a directory: give a directory for the server's files")
        }
        if let imageArchive { try Demo.writeImageArchive(to: imageArchive) }
        let ready = "\(out)/ready"
        // A ready file from an earlier run would tell a waiting script that this one serves.
        if fm.fileExists(atPath: ready) { try fm.removeItem(atPath: ready) }

        // Both signals end the wait below; ignore their default action first so the process does not just die.
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        let (stops, stop) = AsyncStream.makeStream(of: Int32.self)
        let sources = [SIGTERM, SIGINT].map { sig in
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { stop.yield(sig) }
            s.resume()
            return s
        }
        defer { sources.forEach { $0.cancel() } }

        let options = KubeAPIServer.Options(requestLog: requestLog, listenHost: host, listenPort: port, extraServingNames: san)
        let api: KubeAPIServer
        do { api = try await KubeAPIServer.start(options: options) } catch {
            throw Problem("the test API server cannot listen on \(listen): \(error); pick another port (0: a free one)")
        }
        let (id, secret) = Self.randomToken()
        try api.addBootstrapToken(id: id, secret: secret)
        let served = host == "0.0.0.0" || host == "::" ? "127.0.0.1" : host
        let nodeHost = san.first ?? served
        let server = "https://\(nodeHost.contains(":") ? "[\(nodeHost)]" : nodeHost):\(api.port)"

        func write(_ name: String, _ text: String) throws {
            try text.write(toFile: "\(out)/\(name)", atomically: true, encoding: .utf8)
        }
        let outDir = URL(fileURLWithPath: out).standardizedFileURL.path
        try write("ca.crt", api.caPEM)
        try api.writeAdminKubeconfig(to: "\(out)/admin.kubeconfig")
        try write("token", "\(id).\(secret)\n")
        try write("ca-cert-hash", api.caCertHash + "\n")
        try write("server", server + "\n")
        try write("join.env", """
            EDGED_API_SERVER='\(server)'
            EDGED_API_TOKEN='\(id).\(secret)'
            EDGED_API_CA_CERT_HASH='\(api.caCertHash)'
            EDGED_API_KUBECONFIG='\(outDir)/admin.kubeconfig'
            EDGED_API_PORT=\(api.port)
            EDGED_API_PID=\(getpid())

            """)
        try write("ready", server + "\n")
        print("ready \(server) (kubectl: --kubeconfig \(outDir)/admin.kubeconfig, server \(api.url))")
        fflush(nil)

        var signals = stops.makeAsyncIterator()
        let sig = await signals.next() ?? SIGTERM
        try? fm.removeItem(atPath: ready)
        try await api.shutdown()
        print("stopped (signal \(sig))")
    }
}
