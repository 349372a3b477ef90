//! The Pod Security Standards' "restricted" profile, control by control, as a checker of rendered pod specs (used
//! for the kustomize Deployment and the Helm chart's).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};

// ---------------------------------------------------------------------------------------------------------------
// Pod Security Standards, "restricted" profile (https://kubernetes.io/docs/concepts/security/pod-security-standards/,
// policy version latest = 1.32 here). Every baseline and restricted control that applies to a Linux pod, written out.

const RESTRICTED_VOLUME_TYPES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// Violations of the restricted profile by `pod` (with its template `annotations`); empty when it passes.
pub fn restricted_violations(pod: &PodSpec, annotations: &BTreeMap<String, String>) -> Vec<String> {
    let mut v = Vec::new();
    let psc = pod.security_context.clone().unwrap_or_default();
    let containers: Vec<&Container> = pod
        .init_containers
        .iter()
        .flatten()
        .chain(&pod.containers)
        .collect();
    let ephemeral = pod.ephemeral_containers.iter().flatten();

    // Baseline: host namespaces.
    for (flag, on) in [
        ("hostNetwork", pod.host_network),
        ("hostPID", pod.host_pid),
        ("hostIPC", pod.host_ipc),
    ] {
        if on == Some(true) {
            v.push(format!("{flag} is true"));
        }
    }
    // Baseline: HostProcess, sysctls, SELinux, seccomp and AppArmor at pod level.
    if psc
        .windows_options
        .as_ref()
        .and_then(|w| w.host_process)
        .unwrap_or(false)
    {
        v.push("pod hostProcess".into());
    }
    for sysctl in psc.sysctls.iter().flatten() {
        if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
            v.push(format!("unsafe sysctl {}", sysctl.name));
        }
    }
    let selinux_ok = |o: &Option<k8s_openapi::api::core::v1::SELinuxOptions>| {
        o.as_ref().is_none_or(|o| {
            SELINUX_TYPES.contains(&o.type_.as_deref().unwrap_or(""))
                && o.user.as_deref().unwrap_or("").is_empty()
                && o.role.as_deref().unwrap_or("").is_empty()
        })
    };
    if !selinux_ok(&psc.se_linux_options) {
        v.push("pod seLinuxOptions".into());
    }
    let seccomp_ok = |t: &str| t == "RuntimeDefault" || t == "Localhost";
    let pod_seccomp = psc.seccomp_profile.as_ref().map(|p| p.type_.clone());
    if let Some(t) = &pod_seccomp
        && !seccomp_ok(t)
    {
        v.push(format!("pod seccompProfile {t}"));
    }
    let apparmor_ok = |t: &str| t != "Unconfined";
    if let Some(p) = &psc.app_armor_profile
        && !apparmor_ok(&p.type_)
    {
        v.push("pod appArmorProfile Unconfined".into());
    }
    for (k, val) in annotations {
        if k.starts_with("container.apparmor.security.beta.kubernetes.io/")
            && !(val == "runtime/default" || val.starts_with("localhost/"))
        {
            v.push(format!("annotation {k}={val}"));
        }
    }
    // Restricted: runAsNonRoot / runAsUser at pod level.
    if psc.run_as_user == Some(0) {
        v.push("pod runAsUser 0".into());
    }
    let pod_non_root = psc.run_as_non_root == Some(true);

    // Volumes: baseline forbids hostPath; restricted allows only these types.
    for vol in pod.volumes.iter().flatten() {
        let as_json = serde_json::to_value(vol).expect("volume serialises");
        for key in as_json.as_object().expect("volume is a map").keys() {
            if key == "name" {
                continue;
            }
            if !RESTRICTED_VOLUME_TYPES.contains(&key.as_str()) {
                v.push(format!("volume {} has type {key}", vol.name));
            }
        }
    }

    // Per container (init, regular; ephemeral through their security context too).
    type Sc = k8s_openapi::api::core::v1::SecurityContext;
    let mut check = |name: &str, sc: Option<&Sc>, host_ports: &[Option<i32>]| {
        let sc = sc.cloned().unwrap_or_default();
        if sc.privileged == Some(true) {
            v.push(format!("{name}: privileged"));
        }
        if sc
            .windows_options
            .as_ref()
            .and_then(|w| w.host_process)
            .unwrap_or(false)
        {
            v.push(format!("{name}: hostProcess"));
        }
        if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
            v.push(format!("{name}: procMount"));
        }
        if !selinux_ok(&sc.se_linux_options) {
            v.push(format!("{name}: seLinuxOptions"));
        }
        if let Some(p) = &sc.app_armor_profile
            && !apparmor_ok(&p.type_)
        {
            v.push(format!("{name}: appArmorProfile Unconfined"));
        }
        for host_port in host_ports {
            if host_port.is_some_and(|p| p != 0) {
                v.push(format!("{name}: hostPort"));
            }
        }
        if sc.allow_privilege_escalation != Some(false) {
            v.push(format!("{name}: allowPrivilegeEscalation must be false"));
        }
        match sc.run_as_non_root {
            Some(false) => v.push(format!("{name}: runAsNonRoot false")),
            None if !pod_non_root => v.push(format!("{name}: runAsNonRoot unset")),
            _ => {}
        }
        if sc.run_as_user == Some(0) {
            v.push(format!("{name}: runAsUser 0"));
        }
        match sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()) {
            Some(t) if !seccomp_ok(t) => v.push(format!("{name}: seccompProfile {t}")),
            None if pod_seccomp.is_none() => v.push(format!("{name}: seccompProfile unset")),
            _ => {}
        }
        let caps = sc.capabilities.unwrap_or_default();
        if !caps.drop.iter().flatten().any(|c| c == "ALL") {
            v.push(format!("{name}: capabilities must drop ALL"));
        }
        for add in caps.add.iter().flatten() {
            if add != "NET_BIND_SERVICE" {
                v.push(format!("{name}: adds capability {add}"));
            }
        }
    };
    for c in containers {
        let ports: Vec<_> = c.ports.iter().flatten().map(|p| p.host_port).collect();
        check(&c.name, c.security_context.as_ref(), &ports);
    }
    for c in ephemeral {
        let ports: Vec<_> = c.ports.iter().flatten().map(|p| p.host_port).collect();
        check(&c.name, c.security_context.as_ref(), &ports);
    }
    v
}
