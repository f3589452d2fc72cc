// edged's version, as `edged --version`, `edgectl status` and the Node's kubelet version show it.
// VERSION (repository root) is the source of truth; cross/stamp-version.sh rewrites this file, its twin
// Sources/edgectl/Version.swift and VERSION together (a build stamps its own copy of the tree, never this one).
// A test checks that the three agree.

public enum EdgedVersion {
    public static let string = "0.1.0"
}
