public import SyncEngine

/// What the operator set with `keepstate set-state GROUP ...`.
public enum StateOverride: String, Sendable, Codable, CaseIterable {
    /// Follow the group's driver (its static state, or VRRP).
    case auto
    case master
    case backup

    public var role: SyncRole? {
        switch self {
        case .auto: nil
        case .master: .master
        case .backup: .backup
        }
    }
}

/// What drives an HA group when no override is set.
public enum GroupKind: String, Sendable, Codable {
    /// An `ha_group` with a `static_state`.
    case `static`
    case vrrpInstance = "vrrp-instance"
    case vrrpSyncGroup = "vrrp-sync-group"
}

/// One HA group's state: the driver's state, the operator's override and what follows from
/// them. A pure value: the daemon feeds it and acts on the changes it reports.
public struct HAGroupState: Sendable, Equatable {
    public let name: String
    public let kind: GroupKind
    /// The driver's state: the configured static state, or VRRP's (fault counts as backup).
    public private(set) var driven: SyncRole
    public private(set) var override: StateOverride
    public private(set) var transitions = 0
    public private(set) var since: ContinuousClock.Instant

    public init(name: String, kind: GroupKind, driven: SyncRole, override: StateOverride = .auto, now: ContinuousClock.Instant) {
        self.name = name
        self.kind = kind
        self.driven = driven
        self.override = override
        self.since = now
    }

    /// What the VRFs listening to this group do.
    public var effective: SyncRole { override.role ?? driven }

    /// Sets the driver's state; returns the new effective role when it changed.
    public mutating func drive(_ role: SyncRole, now: ContinuousClock.Instant) -> SyncRole? {
        let before = effective
        driven = role
        return changed(from: before, now: now)
    }

    /// Sets the operator's override; returns the new effective role when it changed.
    public mutating func setOverride(_ o: StateOverride, now: ContinuousClock.Instant) -> SyncRole? {
        let before = effective
        override = o
        return changed(from: before, now: now)
    }

    private mutating func changed(from before: SyncRole, now: ContinuousClock.Instant) -> SyncRole? {
        guard effective != before else { return nil }
        transitions += 1
        since = now
        return effective
    }
}
