@testable import EdgedControl
import EdgedCore
import Foundation
import Testing

@Suite struct ControlLogsTests {
    @Test func tailTimestampsAndErrors() async throws {
        let served = try await ServedControl.start()
        let log = "\(served.dir)/main.log"
        try appendCRI(log, (1...5).map { ("stdout", "F", "line \($0)") })
        let sink = ByteSink()
        try await served.client.logs(LogRequest(pod: "web", tail: 2)) { await sink.append($0) }
        #expect(await sink.text == "line 4\nline 5\n")
        let stamped = ByteSink()
        try await served.client.logs(LogRequest(namespace: "default", pod: "web", container: "main", tail: 1, timestamps: true)) {
            await stamped.append($0)
        }
        #expect(await stamped.text == "2026-01-01T00:00:00.000000000Z line 5\n")
        let limited = ByteSink()
        try await served.client.logs(LogRequest(pod: "web", limitBytes: 3)) { await limited.append($0) }
        #expect(await limited.text == "lin")
        await #expect(throws: ControlError.notFound("pod default/nope not found")) {
            try await served.client.logs(LogRequest(pod: "nope")) { _ in }
        }
        await #expect(throws: ControlError.notFound("pod default/web has no container other")) {
            try await served.client.logs(LogRequest(pod: "web", container: "other")) { _ in }
        }
        // The previous instance has no log file: a 404 naming the pod, not an empty answer.
        do {
            try await served.client.logs(LogRequest(pod: "web", previous: true)) { _ in }
            Issue.record("no error")
        } catch let error as ControlError {
            #expect(error.status == 404)
            #expect(error.message.contains("no log yet for pod default/web"))
        }
        await served.stop()
    }

    @Test func followStreamsAppendsAndRotationUntilTheClientLeaves() async throws {
        let served = try await ServedControl.start()
        let log = "\(served.dir)/main.log"
        try appendCRI(log, [("stdout", "F", "first")])
        let sink = ByteSink()
        let client = served.client
        let follower = Task { try await client.logs(LogRequest(pod: "web", follow: true)) { await sink.append($0) } }
        func waitFor(_ text: String) async throws {
            for _ in 0..<300 {
                if await sink.text == text { return }
                try await Task.sleep(for: .milliseconds(10))
            }
            Issue.record("got \(await sink.text.debugDescription), want \(text.debugDescription)")
        }
        try await waitFor("first\n")
        try appendCRI(log, [("stderr", "P", "par"), ("stderr", "F", "tial")])
        try await waitFor("first\npartial\n")
        try appendCRI(log, [("stdout", "F", "last in old file")])
        #expect(rename(log, log + ".1") == 0)
        try appendCRI(log, [("stdout", "F", "new file")])
        try await waitFor("first\npartial\nlast in old file\nnew file\n")
        // The client goes away: the server's stream ends (the server keeps serving others).
        follower.cancel()
        _ = try? await follower.value
        #expect(try await client.pods().count == 2)
        await served.stop()
    }

    @Test func serverShutdownEndsAFollow() async throws {
        let served = try await ServedControl.start()
        try appendCRI("\(served.dir)/main.log", [("stdout", "F", "x")])
        let sink = ByteSink()
        let client = served.client
        let follower = Task { try await client.logs(LogRequest(pod: "web", follow: true)) { await sink.append($0) } }
        for _ in 0..<300 where await sink.text.isEmpty { try await Task.sleep(for: .milliseconds(10)) }
        served.server.shutdown()
        try await served.task.value
        _ = try? await follower.value  // returns: the stream ended
        #expect(await sink.text == "x\n")
        try? FileManager.default.removeItem(atPath: served.dir)
    }
}
