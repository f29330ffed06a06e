//! The typed resources. PLACEHOLDER: specs are raw JSON until the typed fields land.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::meta::ObjectMeta;

macro_rules! placeholder_kind {
    ($name:ident) => {
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            #[serde(default)]
            pub metadata: ObjectMeta,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub spec: Option<Value>,
        }
    };
}
placeholder_kind!(Namespace);
placeholder_kind!(ConfigMap);
placeholder_kind!(Secret);
placeholder_kind!(PersistentVolumeClaim);
placeholder_kind!(Service);
placeholder_kind!(Pod);
placeholder_kind!(Deployment);
placeholder_kind!(StatefulSet);
