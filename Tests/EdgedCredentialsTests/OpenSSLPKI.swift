// Test PKI made with the openssl command-line tool, so what EdgedCredentials produces and reads is checked
// against an independent implementation rather than against itself.

import Foundation
import EdgedTestSupport

/// A CA (certificate + key files) created by `openssl req -x509`.
struct OpenSSLCA {
    let certPath: String
    let keyPath: String
    var pem: String { (try? String(contentsOfFile: certPath, encoding: .utf8)) ?? "" }

    /// A self-signed CA; `rsa` picks RSA-2048 (kubeadm's default) instead of P-256.
    static func make(in dir: TempDir, name: String, rsa: Bool = false) throws -> OpenSSLCA {
        let cert = dir.sub("\(name).crt"), key = dir.sub("\(name).key")
        let keyArgs = rsa ? ["-newkey", "rsa:2048"] : ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        try tool(["openssl", "req", "-x509"] + keyArgs + [
            "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=\(name)",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ])
        return OpenSSLCA(certPath: cert, keyPath: key)
    }

    /// Signs a CSR (PEM text) the way a cluster signer would, copying its SANs; returns the certificate PEM.
    func sign(csrPEM: String, in dir: TempDir, days: Int = 1, extensions: String? = nil) throws -> String {
        let id = UUID().uuidString
        let csr = dir.sub("\(id).csr"), out = dir.sub("\(id).crt")
        try csrPEM.write(toFile: csr, atomically: true, encoding: .utf8)
        var args = ["openssl", "x509", "-req", "-in", csr, "-CA", certPath, "-CAkey", keyPath, "-set_serial",
                    "\(UInt32.random(in: 1...UInt32.max))", "-days", "\(days)", "-copy_extensions", "copy", "-out", out]
        if let extensions {
            let ext = dir.sub("\(id).ext")
            try extensions.write(toFile: ext, atomically: true, encoding: .utf8)
            args += ["-extfile", ext]
        }
        try tool(args)
        return try String(contentsOfFile: out, encoding: .utf8)
    }

    /// An intermediate CA signed by this one.
    func intermediate(in dir: TempDir, name: String) throws -> OpenSSLCA {
        let key = dir.sub("\(name).key"), csr = dir.sub("\(name).csr"), cert = dir.sub("\(name).crt")
        try tool(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", csr, "-subj", "/CN=\(name)"])
        let pem = try sign(csrPEM: String(contentsOfFile: csr, encoding: .utf8), in: dir,
                           extensions: "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
        try pem.write(toFile: cert, atomically: true, encoding: .utf8)
        return OpenSSLCA(certPath: cert, keyPath: key)
    }

    /// kubeadm's CA cert hash, computed the way its docs say:
    /// openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum.
    func kubeadmHash(in dir: TempDir) throws -> String {
        let id = UUID().uuidString
        let pub = dir.sub("\(id).pub"), der = dir.sub("\(id).der")
        try tool(["openssl", "x509", "-in", certPath, "-pubkey", "-noout", "-out", pub])
        try tool(["openssl", "pkey", "-pubin", "-in", pub, "-outform", "der", "-out", der])
        let sum = try tool(["sha256sum", der]).stdout
        return "sha256:" + String(sum.prefix(64))
    }
}

/// Writes `text` to a fresh file in `dir` and returns its path.
func writeTemp(_ text: String, in dir: TempDir, name: String = UUID().uuidString) throws -> String {
    let path = dir.sub(name)
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}


/// Runs a host tool (openssl, sha256sum) found in the standard system directories.
@discardableResult
func tool(_ args: [String]) throws -> CommandResult {
    let dirs = ["/usr/bin", "/bin", "/usr/local/bin"]
    guard let dir = dirs.first(where: { access("\($0)/\(args[0])", X_OK) == 0 }) else {
        throw TestFailure("\(args[0]) is not installed (looked in \(dirs.joined(separator: ", ")))")
    }
    return try runCommand(["\(dir)/\(args[0])"] + args.dropFirst())
}
