//! kubeconfig rendering for kubectl and kube clients.

/// A kubeconfig with cluster/context/user `droplet-operator-sandbox` pointing at `server`.
pub fn render(server: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: droplet-operator-sandbox
  cluster:
    server: {server}
contexts:
- name: droplet-operator-sandbox
  context:
    cluster: droplet-operator-sandbox
    user: droplet-operator-sandbox
    namespace: {namespace}
current-context: droplet-operator-sandbox
users:
- name: droplet-operator-sandbox
  user: {{}}
preferences: {{}}
"
    )
}
