// The osquery extension protocol (osquery/extensions/thrift/osquery.thrift), written for
// watchpost and checked field by field against the Python SDK's generated code
// (PyPI osquery 3.1.1: osquery/extensions/ttypes.py, Extension.py, ExtensionManager.py).
// Regenerate the Rust with ./regenerate.sh after any change.

namespace rs osquery

/// Options a running osquery core reports: flag name -> its value, default and type.
struct InternalOptionInfo {
  1:string value,
  2:string default_value,
  3:string type,
}

typedef map<string, InternalOptionInfo> InternalOptionList

/// What an extension tells core about itself when it registers.
struct InternalExtensionInfo {
  1:string name,
  2:string version,
  3:string sdk_version,
  4:string min_sdk_version,
}

/// Core assigns each registered extension a route UUID.
typedef i64 ExtensionRouteUUID

typedef map<string, string> ExtensionPluginRequest
typedef list<map<string, string>> ExtensionPluginResponse
/// Registry item name -> its route info.
typedef map<string, ExtensionPluginResponse> ExtensionRouteTable
/// Registry name ("table", "config", ...) -> its items.
typedef map<string, ExtensionRouteTable> ExtensionRegistry
typedef map<ExtensionRouteUUID, InternalExtensionInfo> InternalExtensionList

enum ExtensionCode {
  EXT_SUCCESS = 0,
  EXT_FAILED = 1,
  EXT_FATAL = 2,
}

struct ExtensionStatus {
  1:i32 code,
  2:string message,
  3:ExtensionRouteUUID uuid,
}

struct ExtensionResponse {
  1:ExtensionStatus status,
  2:ExtensionPluginResponse response,
}

exception ExtensionException {
  1:i32 code,
  2:string message,
  3:ExtensionRouteUUID uuid,
}

/// Served by every extension (and by core's manager).
service Extension {
  ExtensionStatus ping(),
  ExtensionResponse call(
    1:string registry,
    2:string item,
    3:ExtensionPluginRequest request),
  void shutdown(),
}

/// Served by osquery core on the extensions socket.
service ExtensionManager extends Extension {
  InternalExtensionList extensions(),
  InternalOptionList options(),
  ExtensionStatus registerExtension(
    1:InternalExtensionInfo info,
    2:ExtensionRegistry registry),
  ExtensionStatus deregisterExtension(
    1:ExtensionRouteUUID uuid,
  ),
  ExtensionResponse query(
    1:string sql,
  ),
  ExtensionResponse getQueryColumns(
    1:string sql,
  ),
}
