use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
pub struct Origin {
    pub file: std::sync::Arc<str>,
    pub line: usize,
}
#[derive(Default)]
pub struct ObjectSet {
    pub services: Vec<(Service, Origin)>,
    pub endpoint_slices: Vec<(EndpointSlice, Origin)>,
    pub nodes: Vec<(Node, Origin)>,
    pub warnings: Vec<String>,
}
#[derive(Debug, thiserror::Error)]
#[error("load error {0}")]
pub struct LoadError(String);
pub fn load_objects(path: &str) -> Result<ObjectSet, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError(e.to_string()))?;
    let mut set = ObjectSet::default();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: serde_yaml_ng::Value =
            serde::Deserialize::deserialize(doc).map_err(|e| LoadError(e.to_string()))?;
        let kind = v
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        let o = Origin {
            file: path.into(),
            line: 0,
        };
        match kind.as_str() {
            "Service" => {
                let mut s: Service =
                    serde_yaml_ng::from_value(v).map_err(|e| LoadError(e.to_string()))?;
                if s.metadata.namespace.is_none() {
                    s.metadata.namespace = Some("default".into());
                }
                set.services.push((s, o))
            }
            "EndpointSlice" => {
                let mut s: EndpointSlice =
                    serde_yaml_ng::from_value(v).map_err(|e| LoadError(e.to_string()))?;
                if s.metadata.namespace.is_none() {
                    s.metadata.namespace = Some("default".into());
                }
                set.endpoint_slices.push((s, o))
            }
            "Node" => set.nodes.push((
                serde_yaml_ng::from_value(v).map_err(|e| LoadError(e.to_string()))?,
                o,
            )),
            _ => {}
        }
    }
    Ok(set)
}
