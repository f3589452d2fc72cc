import EdgedCredentials
import EdgedTestSupport
import Foundation
import Testing

@Suite struct CredentialStoreTests {
    /// A store in a fresh directory plus a CA that signs node certificates.
    struct Fixture {
        let dir: TempDir
        let ca: OpenSSLCA
        let store: CredentialStore

        init() throws {
            let dir = try TempDir("edged-cred-store")
            do { ca = try OpenSSLCA.make(in: dir, name: "ca") } catch {
                dir.remove()
                throw error
            }
            self.dir = dir
            store = CredentialStore(dir: dir.sub("pki"))
        }

        func issue(_ key: NodeKey, serving: Bool = false) throws -> String {
            let csr = serving ? try NodeCSR.serving(nodeName: "edge-1", key: key, dnsNames: ["edge-1"], ipAddresses: ["10.1.2.3"])
                              : try NodeCSR.client(nodeName: "edge-1", key: key)
            return try ca.sign(csrPEM: csr.pem, in: dir)
        }

        func mode(_ path: String) throws -> Int {
            (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? -1
        }

        func link(_ kind: CredentialStore.Kind) throws -> String {
            try FileManager.default.destinationOfSymbolicLink(atPath: store.currentPath(kind))
        }
    }

    @Test func emptyDirectoryLoadsNil() throws {
        let f = try Fixture()
        defer { f.dir.remove() }
        #expect(try f.store.load() == nil)
    }

    @Test func savesAndLoadsEverythingWithPrivateModes() throws {
        let f = try Fixture()
        defer { f.dir.remove() }
        let clientKey = NodeKey.generate(), servingKey = NodeKey.generate()
        let clientCert = try f.issue(clientKey)
        try f.store.saveCA(f.ca.pem)
        try f.store.saveCluster(.init(server: "https://10.0.0.1:6443", nodeName: "edge-1"))
        let clientPath = try f.store.save(.client, certificatePEM: clientCert, key: clientKey)
        try f.store.save(.serving, certificatePEM: f.issue(servingKey, serving: true), key: servingKey)

        #expect(try f.mode(clientPath) == 0o600)
        #expect(try f.mode(f.store.clusterPath) == 0o600)
        #expect(try f.mode(f.store.directory) == 0o700)
        #expect(clientPath.hasPrefix(f.store.directory + "/kubelet-client-20"))
        #expect(try f.link(.client) == (clientPath as NSString).lastPathComponent)

        let loaded = try #require(try f.store.load())
        #expect(loaded.cluster == .init(server: "https://10.0.0.1:6443", nodeName: "edge-1"))
        #expect(loaded.caPEM == f.ca.pem)
        let client = try #require(loaded.client)
        #expect(client.path == clientPath)
        #expect(client.certificatePEM == clientCert)
        #expect(client.key.publicKeyPEM == clientKey.publicKeyPEM)
        #expect(client.info.commonName == "system:node:edge-1")
        #expect(loaded.serving?.info.ipAddresses == ["10.1.2.3"])
        // The combined file is what kubelet writes: openssl reads both the certificate and the key from it.
        try tool(["openssl", "x509", "-in", f.store.currentPath(.client), "-noout"])
        try tool(["openssl", "ec", "-in", f.store.currentPath(.client), "-noout", "-check"])
        try tool(["openssl", "verify", "-CAfile", f.store.caPath, f.store.currentPath(.client)])
    }

    @Test func rotationSwapsTheLinkAndPrunesToTwo() throws {
        let f = try Fixture()
        defer { f.dir.remove() }
        var paths: [String] = []
        var keys: [NodeKey] = []
        let start = Date(timeIntervalSince1970: 1_750_000_000)
        for i in 0..<4 {
            let key = NodeKey.generate()
            keys.append(key)
            // Two saves in the same second get distinct names.
            let at = start.addingTimeInterval(Double(i / 2))
            paths.append(try f.store.save(.client, certificatePEM: f.issue(key), key: key, now: at))
            #expect(try f.link(.client) == (paths[i] as NSString).lastPathComponent)
            #expect(try f.store.loadPair(.client)?.key.publicKeyPEM == key.publicKeyPEM)
        }
        #expect(Set(paths).count == 4)
        #expect(paths[0].hasSuffix("kubelet-client-2025-06-15-15-06-40.pem"))
        #expect(paths[1].hasSuffix("kubelet-client-2025-06-15-15-06-40-1.pem"))
        #expect(f.store.files(.client) == Array(paths.suffix(2)))
        // The link itself is a symlink that was replaced, not a file rewritten in place.
        let attrs = try FileManager.default.attributesOfItem(atPath: f.store.currentPath(.client))
        #expect(attrs[.type] as? FileAttributeType == .typeSymbolicLink)
        #expect(f.store.files(.serving).isEmpty)
    }

    @Test func crashLeftoversAreIgnoredAndCleanedUp() throws {
        let f = try Fixture()
        defer { f.dir.remove() }
        let key = NodeKey.generate()
        let good = try f.store.save(.client, certificatePEM: f.issue(key), key: key)
        // What a crash between write and rename leaves behind: half-written temp files and a dangling temp link.
        let pki = f.store.directory
        try "-----BEGIN CERTIFICATE-----\nMIIB".write(toFile: "\(pki)/.kubelet-client-2030-01-01-00-00-00.pem.tmp.99.1", atomically: false, encoding: .utf8)
        try "garbage".write(toFile: "\(pki)/.ca.crt.tmp.99.2", atomically: false, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: "\(pki)/.kubelet-client-current.pem.tmp.99.3", withDestinationPath: "nowhere.pem")
        #expect(try f.store.loadPair(.client)?.path == good)
        #expect(f.store.files(.client) == [good])
        let key2 = NodeKey.generate()
        try f.store.save(.client, certificatePEM: f.issue(key2), key: key2)
        let left = try FileManager.default.contentsOfDirectory(atPath: pki).filter { $0.contains(".tmp.") }
        #expect(left.isEmpty)
    }

    @Test func corruptFilesAreReportedWithTheirPath() throws {
        let f = try Fixture()
        defer { f.dir.remove() }
        let key = NodeKey.generate()
        let path = try f.store.save(.client, certificatePEM: f.issue(key), key: key)
        let whole = try String(contentsOfFile: path, encoding: .utf8)
        // Half-written: the key block is cut off.
        try String(whole.prefix(whole.count - 60)).write(toFile: path, atomically: false, encoding: .utf8)
        let half = #expect(throws: CredentialError.self) { try f.store.load() }
        #expect(half?.code == .corruptFile)
        #expect(half?.message.hasPrefix(path) == true)
        #expect(half?.message.contains("run edgectl join again") == true)

        // A certificate with someone else's key.
        try (f.issue(key) + NodeKey.generate().pem).write(toFile: path, atomically: false, encoding: .utf8)
        let mismatch = #expect(throws: CredentialError.self) { try f.store.loadPair(.client) }
        #expect(mismatch?.message.contains("do not belong together") == true)

        // The link points at a file that is gone.
        try FileManager.default.removeItem(atPath: path)
        let gone = #expect(throws: CredentialError.self) { try f.store.loadPair(.client) }
        #expect(gone?.code == .corruptFile)
        #expect(gone?.message.hasPrefix(path) == true)

        try "-----BEGIN CERTIFICATE-----\nMIIB\n".write(toFile: f.store.caPath, atomically: false, encoding: .utf8)
        let ca = #expect(throws: CredentialError.self) { try f.store.loadCA() }
        #expect(ca?.message.hasPrefix(f.store.caPath) == true)

        try "{\"server\": ".write(toFile: f.store.clusterPath, atomically: false, encoding: .utf8)
        let cluster = #expect(throws: CredentialError.self) { try f.store.loadCluster() }
        #expect(cluster?.message.hasPrefix(f.store.clusterPath) == true)
    }

    @Test func refusesACertificateForAnotherKey() throws {
        let f = try Fixture()
        defer { f.dir.remove() }
        let cert = try f.issue(.generate())
        let error = #expect(throws: CredentialError.self) { try f.store.save(.client, certificatePEM: cert, key: .generate()) }
        #expect(error?.message.contains("is not for this node's key") == true)
        #expect(try f.store.loadPair(.client) == nil)
    }
}
