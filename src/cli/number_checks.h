// defines: count_check, seed_check, finite_number_check, positive_number_check, non_negative_number_check
// Checks of numeric options on their text, before CLI11 converts it: its conversion clamps an
// integer beyond the type's range (--num 99999999999999999999 became 2^63 − 1 samples) and
// wraps a negative one into an unsigned option (--seed -1 became 2^64 − 1), and a float option
// takes nan and inf, which then run to a non-finite result with exit status 0.
#pragma once

namespace CLI { class Validator; }

namespace distillery {

// A count (samples, a batch, subsets): decimal digits for a number from 1 to 2^63 − 1.
CLI::Validator count_check();
// A seed: decimal digits for a number from 0 to 2^64 − 1.
CLI::Validator seed_check();
// A finite floating-point number; one above 0; one of at least 0. (CLI11's own range checks
// print their bound in full: 309 digits for the largest double.)
CLI::Validator finite_number_check();
CLI::Validator positive_number_check();
CLI::Validator non_negative_number_check();

}  // namespace distillery
