// defines: read_npz_members
// The zip layer of numpy's .npz archives (np.savez, np.savez_compressed): each member's bytes,
// checked against the archive's CRC-32, with every size bounded before it is allocated. What
// the bytes hold is io/npy's to parse. Independent of LibTorch, and fuzzed.
#pragma once

#include <map>
#include <string>
#include <string_view>

namespace distillery {

// Member name without ".npy" -> its bytes; `where` names the archive in errors.
std::map<std::string, std::string> read_npz_members(std::string_view archive, const std::string& where);

}  // namespace distillery
