// Pod manifests in YAML and JSON: what decodes, and the errors that name the file and the field.

@testable import EdgedCore
import Testing

struct ManifestTests {
    @Test func yamlAndJSONDecodeToTheSamePod() throws {
        let yaml = """
            apiVersion: v1
            kind: Pod
            metadata:
              name: web
              labels: {app: web, "quoted": "yes"}
            spec:
              restartPolicy: OnFailure
              containers:
              - name: main
                image: busybox:1.36
                command: [sh, -c, "echo hi"]
                env:
                - {name: COUNT, value: "3"}
                - name: ON
                  value: "true"
                resources:
                  limits: {memory: 64Mi, cpu: 250m}
                ports: [{containerPort: 8080}]
            """
        let json = """
            {"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","labels":{"app":"web","quoted":"yes"}},
             "spec":{"restartPolicy":"OnFailure","containers":[{"name":"main","image":"busybox:1.36","command":["sh","-c","echo hi"],
             "env":[{"name":"COUNT","value":"3"},{"name":"ON","value":"true"}],"resources":{"limits":{"memory":"64Mi","cpu":"250m"}},
             "ports":[{"containerPort":8080}]}]}}
            """
        let a = try Manifest.decodePods(yaml, source: "a.yaml")
        let b = try Manifest.decodePods(json, source: "b.json")
        #expect(a == b)
        #expect(a[0].spec.restartPolicy == .onFailure)
        #expect(a[0].spec.containers[0].env?[1].value == "true")
        #expect(try a[0].spec.containers[0].resources?.limits?["memory"]?.value() == 64 << 20)
        #expect(try a[0].spec.containers[0].resources?.limits?["cpu"]?.milliValue() == 250)
    }

    @Test func severalDocumentsAndAnchors() throws {
        let text = """
            base: &img busybox:1
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: one}
            spec: {containers: [{name: c, image: busybox}]}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: two}
            spec: {containers: [{name: c, image: busybox}]}
            """
        // The first document is no Pod: the error names its position.
        #expect(throws: EdgedError.self) { try Manifest.decodePods(text, source: "multi.yaml") }
        let pods = try Manifest.decodePods(String(text.drop { $0 != "-" }), source: "multi.yaml")
        #expect(pods.map(\.name) == ["one", "two"])
        let anchored = try YAMLParser.parse("a: &x {k: 1}\nb: *x\nc: {<<: *x, j: 2}")
        #expect(anchored[0]["b"] == .object([("k", .number("1"))]))
        #expect(anchored[0]["c"]?["k"] == .number("1"))
    }

    @Test func coreSchemaScalars() throws {
        let v = try YAMLParser.parse("a: 010\nb: 0x1F\nc: .5\nd: ~\ne: 'true'\nf: True\ng: 1e3\nh: -7\ni: 1.2.3")[0]
        #expect(v["a"] == .number("10"))
        #expect(v["b"] == .number("31"))
        #expect(v["c"] == .number("0.5"))
        #expect(v["d"] == .null)
        #expect(v["e"] == .string("true"))
        #expect(v["f"] == .bool(true))
        #expect(v["g"] == .number("1e3"))
        #expect(v["h"] == .number("-7"))
        #expect(v["i"] == .string("1.2.3"))
    }

    @Test(arguments: [
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: x\nspec: [", "YAML error at line"),
        ("apiVersion: v1\nkind: Deployment\nmetadata: {name: x}\nspec: {containers: []}", "only kind: Pod"),
        ("apiVersion: v1\nkind: Pod\nspec: {containers: [{name: c, image: i}]}", "metadata is required"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {}\nspec: {containers: [{name: c, image: i}]}", "metadata.name is required"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: c, image: i}]}", "must be lower-case"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: []}", "at least one container"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c}]}", "has no image"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c, image: i}, {name: c, image: i}]}", "used twice"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c, image: i, resources: {limits: {memory: lots}}}]}", "invalid quantity"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c, image: i, volumeMounts: [{name: v, mountPath: /v}]}]}", "which spec.volumes does not define"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {volumes: [{name: v, nfs: {}}], containers: [{name: c, image: i}]}", "no supported source"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c, image: i, command: sh}]}", "wrong type"),
        ("- just\n- a list", "must be a mapping"),
    ])
    func badManifestsFailWithAMessageNamingTheFile(text: String, expected: String) {
        do {
            _ = try Manifest.decodePods(text, source: "/etc/edged/manifests/bad.yaml")
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.message.hasPrefix("/etc/edged/manifests/bad.yaml"))
            #expect(error.message.contains(expected), "\(error.message)")
        }
    }

    @Test func quantities() throws {
        #expect(try Quantity("100m").milliValue() == 100)
        #expect(try Quantity("2").milliValue() == 2000)
        #expect(try Quantity("0.5").milliValue() == 500)
        #expect(try Quantity("128Mi").value() == 134_217_728)
        #expect(try Quantity("1G").value() == 1_000_000_000)
        #expect(try Quantity("1.5Gi").value() == 1_610_612_736)
        #expect(try Quantity("2e3").value() == 2000)
        for bad in ["", "Mi", "-1", "12XB", "1..2", "e5"] {
            #expect(throws: EdgedError.self, "\(bad)") { try Quantity(bad).value() }
        }
    }

    @Test func timestampsFormatLikeTheAPI() {
        let t = Timestamp(nanoseconds: 1_763_769_599_123_456_789)
        #expect(t.rfc3339 == "2025-11-21T23:59:59Z")
        #expect(t.rfc3339Nano == "2025-11-21T23:59:59.123456789Z")
    }
}
