#include "io/npz_archive.h"

#include <fmt/format.h>
#include <zip.h>
#include <zlib.h>

#include <memory>

#include "core/error.h"

namespace distillery {

namespace {

// Deflate cannot expand data by more than about 1032:1, so a member claiming more than that
// is damaged or hostile; a stored member is exactly its compressed size.
constexpr uint64_t kDeflateRatio = 1032;
// A 2048-dimensional σ (Inception features) is 32 MiB; room for far larger feature spaces.
constexpr uint64_t kMaxMemberBytes = uint64_t{1} << 32;
constexpr zip_int64_t kMaxMembers = 64;

std::string zip_error_text(zip_error_t* error) {
  std::string text = zip_error_strerror(error);
  zip_error_fini(error);
  return text;
}

}  // namespace

std::map<std::string, std::string> read_npz_members(std::string_view bytes, const std::string& where) {
  // libzip takes no bytes at all for an empty archive; no program writes statistics that way.
  DISTILLERY_CHECK(!bytes.empty(), Error("the .npz file is empty").file(where).expected("a .npz archive of mu and sigma"));
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* source = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  DISTILLERY_CHECK(source, Error("cannot read the .npz archive").file(where).got(zip_error_text(&error)));
  zip_t* opened = zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &error);
  if (!opened) {
    zip_source_free(source);
    throw Error("not a readable .npz (zip) archive").file(where).got(zip_error_text(&error));
  }
  zip_error_fini(&error);
  const std::unique_ptr<zip_t, void (*)(zip_t*)> archive(opened, zip_discard);

  const auto entries = zip_get_num_entries(archive.get(), 0);
  DISTILLERY_CHECK(entries <= kMaxMembers, Error("the .npz archive has too many members").file(where)
                                               .expected(fmt::format("at most {}", kMaxMembers)).got(std::to_string(entries)));
  std::map<std::string, std::string> members;
  for (zip_int64_t i = 0; i < entries; ++i) {
    zip_stat_t stat;
    DISTILLERY_CHECK(zip_stat_index(archive.get(), static_cast<zip_uint64_t>(i), 0, &stat) == 0 && (stat.valid & ZIP_STAT_NAME) &&
                         (stat.valid & ZIP_STAT_SIZE) && (stat.valid & ZIP_STAT_COMP_SIZE) && (stat.valid & ZIP_STAT_COMP_METHOD),
                     Error("cannot read the archive directory").file(where));
    const std::string name = stat.name;
    const auto member_where = fmt::format("{} ({})", where, name);
    DISTILLERY_CHECK(name.ends_with(".npy"), Error("archive member is not a .npy array").file(member_where));
    const bool stored = stat.comp_method == ZIP_CM_STORE;
    DISTILLERY_CHECK(stored || stat.comp_method == ZIP_CM_DEFLATE, Error("archive member uses an unsupported compression").file(member_where)
                                                                       .expected("stored or deflated (np.savez, np.savez_compressed)"));
    const uint64_t limit = std::min(kMaxMemberBytes, stored ? stat.comp_size : stat.comp_size * kDeflateRatio + 1024);
    DISTILLERY_CHECK(stat.size <= limit, Error("archive member declares more bytes than its data can hold").file(member_where)
                                             .expected(fmt::format("at most {} bytes", limit)).got(fmt::format("{} bytes", stat.size)));
    std::string data(static_cast<size_t>(stat.size), '\0');
    zip_file_t* member = zip_fopen_index(archive.get(), static_cast<zip_uint64_t>(i), 0);
    DISTILLERY_CHECK(member, Error("cannot open archive member").file(member_where).got(zip_strerror(archive.get())));
    const auto read = zip_fread(member, data.data(), data.size());
    zip_fclose(member);
    DISTILLERY_CHECK(read == static_cast<zip_int64_t>(data.size()), Error("archive member is truncated or corrupt").file(member_where));
    // libzip compares the CRC only when a read reaches past the end, which a read of exactly
    // the member's size never does: compare it here.
    const auto crc = crc32_z(0, reinterpret_cast<const Bytef*>(data.data()), data.size());
    DISTILLERY_CHECK((stat.valid & ZIP_STAT_CRC) && crc == stat.crc, Error("archive member fails its CRC check: the file is damaged").file(member_where)
                                                                         .expected(fmt::format("CRC-32 {:08x}", stat.crc)).got(fmt::format("{:08x}", crc)));
    members[name.substr(0, name.size() - 4)] = std::move(data);
  }
  return members;
}

}  // namespace distillery
