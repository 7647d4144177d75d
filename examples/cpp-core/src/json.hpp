// One JSON type for the whole core: nlohmann's, keeping insertion order so that records come
// out with their fields in the order the Python core writes them.
#pragma once

#include <nlohmann/json.hpp>

using Json = nlohmann::ordered_json;

// Compact JSON, UTF-8 kept as is (what orjson.dumps writes).
inline std::string dump_json(const Json& value) { return value.dump(); }
