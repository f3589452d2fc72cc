import Foundation
import NIOCore
import Testing
@testable import EdgedCore
@testable import EdgedGRPCTransport
@testable import EdgedImages
@testable import EdgedKube
@testable import EdgedKubeletAPI
@testable import EdgedNetwork
@testable import EdgedTunnel

private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// A tar stream in memory, for TarReader.
private final class MemorySource: ByteSource {
    private let data: [UInt8]
    private var offset = 0
    init(_ data: [UInt8]) { self.data = data }
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(ImageError) -> Int {
        let n = min(buffer.count, data.count - offset)
        guard n > 0 else { return 0 }
        data.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: n) }
        offset += n
        return n
    }
}

/// A one-file tar archive (ustar), as a seed.
private func tarSeed() -> [UInt8] {
    var header = [UInt8](repeating: 0, count: 512)
    func put(_ text: String, at: Int) { for (i, b) in text.utf8.enumerated() { header[at + i] = b } }
    put("etc/hello.txt", at: 0)
    put("0000644\0", at: 100); put("0000000\0", at: 108); put("0000000\0", at: 116)
    put("00000000005\0", at: 124); put("14000000000\0", at: 136)
    put("0", at: 156); put("ustar\0", at: 257); put("00", at: 263)
    put("        ", at: 148)
    let sum = header.reduce(0) { $0 + Int($1) }
    put(String(sum, radix: 8).leftPad(6) + "\0 ", at: 148)
    var tar = header + bytes("hello") + [UInt8](repeating: 0, count: 507)
    tar += [UInt8](repeating: 0, count: 1024)
    return tar
}

private extension String {
    func leftPad(_ n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}

let podYAML = """
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  restartPolicy: Always
  containers:
  - name: c
    image: busybox:1.36
    command: ["sh", "-c", "echo hi"]
    env: [{name: A, value: "1"}]
    resources: {limits: {memory: 64Mi, cpu: 250m}}
    ports: [{containerPort: 80, hostPort: 8080}]
    livenessProbe: {exec: {command: [true]}, periodSeconds: 5}
  volumes: [{name: v, emptyDir: {}}]
---
{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "j"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
"""

/// The first pod of podYAML as JSON, for the structure-aware mutations.
let podJSON: [UInt8] = (try? Array(YAMLParser.parse(podYAML)[0].jsonText.utf8)) ?? []

let fuzzTargets: [FuzzTarget] = [
    FuzzTarget(name: "pod-manifest", json: true, seeds: [bytes(podYAML), bytes("kind: Pod\nmetadata: {name: a}\n"), podJSON],
               dictionary: ["&a ", "*a", "<<: ", "!!binary ", "- ", ": ", "{", "[", "\"\\u0000\"", "1e999", "-0x1",
                            "name: ", "containers:", "image: ", "---\n", "memory: 1Ei", "cpu: 99999999999"].map(bytes)) { input in
        _ = try Manifest.decodePods(String(decoding: input, as: UTF8.self), source: "fuzz.yaml")
    },
    FuzzTarget(name: "json", json: true, seeds: [bytes(#"{"a": [1, 2.5e3, -0, true, null, "x\u00e9\n"], "b": {"c": {}}}"#)],
               dictionary: ["\\u", "\\ud800", "1e400", "[[[[[[[[", "{\"", "\":", "-", "0.", "\u{FEFF}"].map(bytes)) { input in
        _ = try JSONValue.parse(input)
    },
    FuzzTarget(name: "watch-event", json: true,
               seeds: [bytes(#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"default","resourceVersion":"7"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}}"#),
                       bytes(#"{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"12"}}}"#),
                       bytes(#"{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old"}}"#)],
               dictionary: ["\"type\":", "\"object\":", "DELETED", "MODIFIED", "\"metadata\":", "null"].map(bytes)) { input in
        _ = try WatchStreamDecoder<Pod>.decodeEvent(input)
        var decoder = WatchStreamDecoder<Pod>(maxEventBytes: 1 << 16)
        _ = try decoder.feed(input + [0x0A] + input)
    },
    FuzzTarget(name: "oci-manifest", json: true,
               seeds: [bytes(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aaaa","size":7},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:bbbb","size":1}]}"#),
                       bytes(#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:cc","size":3,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}"#),
                       bytes(#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Entrypoint":["/bin/sh"],"Cmd":["-c","x"],"WorkingDir":"/","User":"1000:1000"},"rootfs":{"type":"layers","diff_ids":["sha256:dd"]}}"#)],
               dictionary: ["\"digest\":", "\"size\":-1", "sha256:", "\"layers\":", "9223372036854775808"].map(bytes)) { input in
        var failures = 0
        do { _ = try JSON.decode(EdgedImages.Manifest.self, input, what: "fuzz manifest") } catch { failures += 1 }
        do { _ = try JSON.decode(ManifestIndex.self, input, what: "fuzz index") } catch { failures += 1 }
        do { _ = try JSON.decode(ImageConfigDocument.self, input, what: "fuzz config") } catch { failures += 1 }
        if failures == 3 { throw FuzzRejected() }
    },
    FuzzTarget(name: "tar-layer", seeds: [tarSeed()], dictionary: [bytes("ustar\0"), bytes("././@LongLink"), bytes("../../"), bytes("/etc/passwd"), [0x80, 0, 0, 0]]) { input in
        let reader = TarReader(MemorySource(input), label: "fuzz layer")
        var buffer = [UInt8](repeating: 0, count: 4096)
        var entries = 0
        while let _ = try reader.next() {
            entries += 1
            _ = try buffer.withUnsafeMutableBytes { try reader.readData(into: $0) }
            if entries > 10_000 { break }
        }
    },
    FuzzTarget(name: "cni-result", json: true,
               seeds: [bytes(#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"aa:bb:cc:dd:ee:ff","sandbox":"/var/run/netns/x"}],"ips":[{"address":"10.22.0.5/16","gateway":"10.22.0.1","interface":0}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.96.0.10"]}}"#)],
               dictionary: ["\"interface\":99", "/33", "::1/129", "\"ips\":", "300.1.1.1"].map(bytes)) { input in
        _ = try CNIResult.parse(input, plugin: "fuzz")
    },
    FuzzTarget(name: "konnectivity-packet",
               seeds: [try! KonnPacket.with { $0.type = .dialReq; $0.dialRequest = .with { $0.address = "10.0.0.1:10250"; $0.protocol = "tcp"; $0.random = 42 } }.serializedBytes(),
                       try! KonnPacket.with { $0.type = .data; $0.data = .with { $0.connectID = 7; $0.data = Data([1, 2, 3]) } }.serializedBytes()],
               dictionary: [[0x08, 0x01], [0x12, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F], [0x80, 0x80, 0x80]]) { input in
        let packet = try KonnPacket(serializedBytes: input)
        _ = try packet.serializedBytes() as [UInt8]
    },
    FuzzTarget(name: "grpc-frames", seeds: [[0, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 0]], dictionary: [[1], [0, 0xFF, 0xFF, 0xFF, 0xFF]]) { input in
        var deframer = GRPCMessageDeframer(maxMessageBytes: 1 << 16)
        var rest = ByteBuffer(bytes: input)
        while let chunk = rest.readSlice(length: min(rest.readableBytes, 7)), chunk.readableBytes > 0 {
            deframer.append(chunk)
            while try deframer.next() != nil {}
        }
    },
    FuzzTarget(name: "kubelet-query",
               seeds: [bytes("/containerLogs/default/web/c?follow=true&tailLines=10&timestamps=1&sinceSeconds=5&limitBytes=100&previous=false"),
                       bytes("/exec/default/web/c?command=sh&command=-c&command=echo%20hi&stdin=1&stdout=1&tty=1"),
                       bytes("/portForward/default/web?port=80&port=8080")],
               dictionary: ["%", "%zz", "+", "&&", "=", "tailLines=-1", "sinceTime=", "port=99999", "?"].map(bytes)) { input in
        let uri = String(decoding: input, as: UTF8.self)
        let target = KubeletTarget(uri: uri)
        var failures = 0
        do { _ = try ContainerLogsRequest(target: target) } catch { failures += 1 }
        do { _ = try StreamingRequest.parse(path: target.path, query: target.rawQuery) } catch { failures += 1 }
        if failures == 2 { throw FuzzRejected() }
    },
    FuzzTarget(name: "cri-log", seeds: [bytes("2026-11-22T10:00:00.123456789Z stdout F hello world"), bytes("2026-11-22T10:00:00Z stderr P part")],
               dictionary: ["Z ", "+25:00", " F ", " P ", "stdout", "9999-99-99T"].map(bytes)) { input in
        _ = try CRILogRecord.parse(input[...])
    },
]

struct FuzzRejected: Error {}

@Suite struct ParserFuzzTests {
    @Test(arguments: fuzzTargets.map(\.name))
    func noCrashNoHang(target name: String) throws {
        let target = try #require(fuzzTargets.first { $0.name == name })
        // EDGED_FUZZ_TARGETS=a,b runs only those (long runs of a few targets, several processes side by side).
        if let only = ProcessInfo.processInfo.environment["EDGED_FUZZ_TARGETS"], !only.split(separator: ",").contains(Substring(name)) {
            return
        }
        let report = Fuzz.run(target)
        print(report)
        #expect(report.inputs > target.seeds.count, "the fuzzer ran no mutated input")
    }
}
