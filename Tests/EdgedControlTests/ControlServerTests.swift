@testable import EdgedControl
import EdgedCore
import Foundation
import Testing

@Suite struct ControlServerTests {
    @Test func statusPodsImagesRoundTrip() async throws {
        let served = try await ServedControl.start()
        defer { Task { await served.stop() } }
        let client = served.client
        let status = try await client.status()
        #expect(status == (await served.backend.report))
        #expect(try await client.pods().map(\.name) == ["web", "crashy"])
        #expect(try await client.images().count == 2)
        await served.stop()
    }

    @Test func imageOperationsAndTheirErrors() async throws {
        let served = try await ServedControl.start()
        let client = served.client
        let archive = "\(served.dir)/image.tar"
        FileManager.default.createFile(atPath: archive, contents: Data("x".utf8))
        #expect(try await client.importImage(path: archive).map(\.digest) == ["sha256:ccc"])
        await #expect(throws: ControlError.notFound("no such file: /nonexistent.tar")) {
            try await client.importImage(path: "/nonexistent.tar")
        }
        #expect(try await client.pullImage(reference: "busybox:1.36").references == ["busybox:1.36"])
        await #expect(throws: ControlError(status: 502, message: "registry unreachable for unreachable:1")) {
            try await client.pullImage(reference: "unreachable:1")
        }
        await #expect(throws: ControlError(status: 400, message: "invalid reference \"a b\"")) {
            try await client.pullImage(reference: "a b")
        }
        try await client.removeImage(reference: "old:1")
        #expect(await served.backend.removed == ["old:1"])
        await #expect(throws: ControlError.conflict("image docker.io/library/busybox:latest is used by a running pod")) {
            try await client.removeImage(reference: "docker.io/library/busybox:latest")
        }
        await #expect(throws: ControlError.notFound("image nope:1 not found")) { try await client.removeImage(reference: "nope:1") }
        #expect(try await client.pruneImages() == ["old:1"])
        await served.stop()
    }

    @Test func unknownRouteWrongMethodAndBadQueries() async throws {
        let served = try await ServedControl.start()
        let notFound = try await rawHTTP(served.socketPath, "GET /v1/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        #expect(notFound.status == 404)
        #expect(notFound.body.contains("\"error\":\"no such endpoint: GET \\/v1\\/nope") || notFound.body.contains("no such endpoint"))
        let method = try await rawHTTP(served.socketPath, "POST /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        #expect(method.status == 405)
        let badTail = try await rawHTTP(served.socketPath, "GET /v1/logs?pod=web&tail=ten HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        #expect(badTail.status == 400)
        #expect(badTail.body.contains("tail"))
        let noPod = try await rawHTTP(served.socketPath, "GET /v1/logs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        #expect(noPod.status == 400)
        let badBody = try await rawHTTP(served.socketPath, "POST /v1/images/pull HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{x}")
        #expect(badBody.status == 400)
        #expect(badBody.body.contains("not valid JSON"))
        let noRef = try await rawHTTP(served.socketPath, "DELETE /v1/images HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        #expect(noRef.status == 400)
        // Garbage that is not HTTP gets a 400 from NIO's error handling, and the server keeps serving.
        let garbage = try await rawHTTP(served.socketPath, "\u{1}\u{2}nonsense\r\n\r\n")
        #expect(garbage.status == 400 || garbage.status == 0)
        #expect(try await served.client.pods().count == 2)
        await served.stop()
    }

    @Test func keepAliveServesSeveralRequests() async throws {
        let served = try await ServedControl.start()
        let two = try await rawHTTP(served.socketPath,
                              "GET /v1/pods HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/images HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        #expect(two.status == 200)
        #expect(two.body.contains("sha256:aaa"))
        await served.stop()
    }

    @Test func socketIsRootOnlyAndRemovedOnStop() async throws {
        let served = try await ServedControl.start()
        var st = stat()
        #expect(stat(served.socketPath, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o600)
        #expect(st.st_uid == 0 || st.st_uid == getuid())
        served.task.cancel()
        _ = try? await served.task.value
        #expect(!FileManager.default.fileExists(atPath: served.socketPath))
        try? FileManager.default.removeItem(atPath: served.dir)
    }

    @Test func groupSocketIs0660() async throws {
        let served = try await ServedControl.start(groupID: 65534)
        var st = stat()
        #expect(stat(served.socketPath, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o660)
        #expect(st.st_gid == 65534)
        await served.stop()
    }

    @Test func staleSocketFileIsReplaced() async throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/edged.sock"
        // A socket file nobody listens on: what a crashed edged leaves behind.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        close(fd)
        #expect(FileManager.default.fileExists(atPath: path))
        await #expect(throws: ControlClientError.self) { try await ControlClient(socketPath: path).status() }
        let server = ControlServer(configuration: .init(socketPath: path), backend: TestBackend(logDir: dir))
        let task = Task { try await server.run() }
        try await waitForListening(path)
        #expect(try await ControlClient(socketPath: path).pods().count == 2)
        server.shutdown()
        try await task.value
    }

    @Test func refusesToStartWhenAnotherEdgedAnswers() async throws {
        let served = try await ServedControl.start()
        let second = ControlServer(configuration: .init(socketPath: served.socketPath), backend: served.backend)
        do {
            try await second.run()
            Issue.record("second server started")
        } catch let error as ControlServerError {
            #expect(error.kind == .alreadyRunning(pid: getpid()))
            #expect(error.message == "edged is already running (pid \(getpid())) on \(served.socketPath)")
        }
        // The first one still serves.
        #expect(try await served.client.pods().count == 2)
        await served.stop()
    }

    @Test func refusesAPathThatIsNotASocket() async throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/edged.sock"
        FileManager.default.createFile(atPath: path, contents: Data())
        let server = ControlServer(configuration: .init(socketPath: path), backend: TestBackend(logDir: dir))
        await #expect(throws: ControlServerError.self) { try await server.run() }
        #expect(FileManager.default.fileExists(atPath: path))
    }

    @Test func clientSaysWhenEdgedIsNotRunning() async throws {
        let client = ControlClient(socketPath: "/tmp/edged-none-\(getpid())/edged.sock")
        do {
            _ = try await client.status()
            Issue.record("no error")
        } catch let error as ControlClientError {
            #expect(error.kind == .notRunning)
            #expect(error.message == "edged is not running (no socket at /tmp/edged-none-\(getpid())/edged.sock). Start it with: systemctl start edged")
        }
        // Permission denied: the message for EACCES.
        let denied = client.describe(errnoCode: EACCES, error: ControlError.internal("connect"))
        #expect(denied.kind == .permissionDenied)
        #expect(denied.message == "permission denied on /tmp/edged-none-\(getpid())/edged.sock: run edgectl as root (sudo edgectl …)")
    }

    @Test func shutdownEndsRun() async throws {
        let served = try await ServedControl.start()
        served.server.shutdown()
        try await served.task.value
        #expect(!FileManager.default.fileExists(atPath: served.socketPath))
        try? FileManager.default.removeItem(atPath: served.dir)
    }
}
