#include "compile/batches.h"

namespace qforge {

void for_each_batch(const ShardSource& source, const std::function<void(const Batch&)>& body) {
  SampleReader reader(source.info, source.rows, source.options);
  while (auto batch = reader.next()) body(*batch);
}

}  // namespace qforge
