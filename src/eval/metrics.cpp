#include "eval/metrics.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <Eigen/Dense>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace distillery {

namespace {

using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

Matrix to_eigen(const at::Tensor& t) {
  const auto c = t.to(torch::kFloat64).contiguous();
  return Eigen::Map<const Matrix>(c.data_ptr<double>(), c.size(0), c.size(1));
}

// tr √(AB) for symmetric positive semi-definite A, B; NaN if an eigensolver fails.
double trace_sqrt_product(const Matrix& a, const Matrix& b) {
  Eigen::SelfAdjointEigenSolver<Matrix> eigen_a(a);
  if (eigen_a.info() != Eigen::Success) return NAN;
  const Eigen::VectorXd root_values = eigen_a.eigenvalues().cwiseMax(0.0).cwiseSqrt();
  const Matrix root_a = eigen_a.eigenvectors() * root_values.asDiagonal() * eigen_a.eigenvectors().transpose();
  Matrix m = root_a * b * root_a;
  m = 0.5 * (m + m.transpose());  // symmetric up to rounding; make it exactly so for the solver
  Eigen::SelfAdjointEigenSolver<Matrix> eigen_m(m, Eigen::EigenvaluesOnly);
  if (eigen_m.info() != Eigen::Success) return NAN;
  return eigen_m.eigenvalues().cwiseMax(0.0).cwiseSqrt().sum();
}

}  // namespace

double frechet_distance(const FeatureStatistics& a, const FeatureStatistics& b, double epsilon) {
  DISTILLERY_CHECK(a.dims() == b.dims(), Error("the two statistics come from different feature networks")
                                             .expected(fmt::format("equal feature dimensions")).got(fmt::format("{} vs {}", a.dims(), b.dims())));
  const auto diff = a.mean() - b.mean();
  const Matrix s1 = to_eigen(a.covariance()), s2 = to_eigen(b.covariance());
  double trace_root = trace_sqrt_product(s1, s2);
  if (!std::isfinite(trace_root)) {
    const Matrix offset = Matrix::Identity(s1.rows(), s1.cols()) * epsilon;
    trace_root = trace_sqrt_product(s1 + offset, s2 + offset);
  }
  DISTILLERY_CHECK(std::isfinite(trace_root), Error("the Fréchet distance is not finite (NaN or Inf in the statistics?)"));
  const double distance = diff.dot(diff).item<double>() + s1.trace() + s2.trace() - 2.0 * trace_root;
  // Finite statistics can still overflow a double here (means near 1e160); report that, not a null.
  DISTILLERY_CHECK(std::isfinite(distance), Error("the Fréchet distance overflows: the statistics' means or covariances are too large to compare")
                                                .expected("features of a classifier or Inception network (magnitudes far below 1e150)")
                                                .got(fmt::format("largest |mean| {:g} and {:g}", a.mean().abs().max().item<double>(),
                                                                 b.mean().abs().max().item<double>())));
  return distance;
}

KernelInceptionDistance kernel_inception_distance(const at::Tensor& a, const at::Tensor& b, int64_t subsets, int64_t subset_size, uint64_t seed) {
  DISTILLERY_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(1), Error("KID needs two [n, d] feature sets of the same d"));
  const int64_t m = std::min({subset_size, a.size(0), b.size(0)});
  DISTILLERY_CHECK(m >= 2, Error("KID needs at least two features in each set").got(fmt::format("{} and {}", a.size(0), b.size(0))));
  const double d = static_cast<double>(a.size(1));
  const auto x_all = a.to(torch::kFloat64), y_all = b.to(torch::kFloat64);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<double> values;
  for (int64_t s = 0; s < subsets; ++s) {
    const auto x = x_all.index_select(0, torch::randperm(a.size(0), generator, torch::kInt64).slice(0, 0, m));
    const auto y = y_all.index_select(0, torch::randperm(b.size(0), generator, torch::kInt64).slice(0, 0, m));
    const auto kxx = (x.matmul(x.t()) / d + 1).pow(3), kyy = (y.matmul(y.t()) / d + 1).pow(3), kxy = (x.matmul(y.t()) / d + 1).pow(3);
    const double pairs = static_cast<double>(m) * static_cast<double>(m - 1);
    const double mmd = (kxx.sum() - kxx.diagonal().sum()).item<double>() / pairs + (kyy.sum() - kyy.diagonal().sum()).item<double>() / pairs -
                       2.0 * kxy.mean().item<double>();
    values.push_back(mmd);
  }
  const auto t = torch::tensor(values, torch::kFloat64);
  return {t.mean().item<double>(), values.size() > 1 ? t.std().item<double>() : 0.0, subsets, m};
}

namespace {
constexpr int64_t kBlock = 2048;

// Distance from each row of x to its k-th nearest other row.
at::Tensor kth_neighbour_radii(const at::Tensor& x, int64_t k) {
  std::vector<at::Tensor> radii;
  for (int64_t start = 0; start < x.size(0); start += kBlock) {
    const auto block = x.slice(0, start, std::min(start + kBlock, x.size(0)));
    // k + 1 smallest: the nearest is the point itself at distance 0.
    radii.push_back(std::get<0>(torch::cdist(block, x).topk(k + 1, 1, /*largest=*/false)).select(1, k));
  }
  return torch::cat(radii);
}

// Share of `queries` inside some ball (centre row of `centres`, radius `radii`).
double coverage(const at::Tensor& queries, const at::Tensor& centres, const at::Tensor& radii) {
  int64_t inside = 0;
  for (int64_t start = 0; start < queries.size(0); start += kBlock) {
    const auto block = queries.slice(0, start, std::min(start + kBlock, queries.size(0)));
    inside += torch::cdist(block, centres).le(radii.unsqueeze(0)).any(1).sum().item<int64_t>();
  }
  return static_cast<double>(inside) / static_cast<double>(queries.size(0));
}
}  // namespace

PrecisionRecall precision_recall(const at::Tensor& real, const at::Tensor& generated, int64_t k) {
  DISTILLERY_CHECK(real.dim() == 2 && generated.dim() == 2 && real.size(1) == generated.size(1),
                   Error("precision/recall needs two [n, d] feature sets of the same d"));
  DISTILLERY_CHECK(real.size(0) > k && generated.size(0) > k,
                   Error(fmt::format("precision/recall with k = {} needs more than {} features in each set", k, k)));
  const auto r = real.to(torch::kFloat64), g = generated.to(torch::kFloat64);
  return {coverage(g, r, kth_neighbour_radii(r, k)), coverage(r, g, kth_neighbour_radii(g, k)), k};
}

double classification_accuracy(const at::Tensor& logits, const at::Tensor& labels) {
  DISTILLERY_CHECK(logits.dim() == 2 && labels.dim() == 1 && logits.size(0) == labels.size(0), Error("accuracy needs logits [n, classes] and labels [n]"));
  const int64_t classes = logits.size(1), highest = labels.numel() > 0 ? labels.max().item<int64_t>() : 0;
  DISTILLERY_CHECK(highest < classes, Error("a label is beyond the classifier's classes").expected(fmt::format("labels from 0 to {}", classes - 1))
                                          .got(std::to_string(highest)));
  return logits.argmax(1).eq(labels).to(torch::kFloat64).mean().item<double>();
}

double sliced_wasserstein_distance(const at::Tensor& a, const at::Tensor& b, int64_t projections, uint64_t seed) {
  DISTILLERY_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(1) && a.size(0) == b.size(0) && a.size(0) > 0,
                   Error("the sliced Wasserstein distance needs two [n, d] sets of the same n and d")
                       .got(fmt::format("[{}] and [{}]", fmt::join(a.sizes(), ", "), fmt::join(b.sizes(), ", "))));
  DISTILLERY_CHECK(projections > 0, Error("the sliced Wasserstein distance needs at least one projection").got(std::to_string(projections)));
  std::vector<int64_t> rows(static_cast<size_t>(projections));
  std::iota(rows.begin(), rows.end(), 0);
  const auto options = a.options().dtype(torch::kFloat64);
  auto directions = per_sample_normal(seed, noise_stream::sliced_wasserstein_directions, rows, {a.size(1)}, options);
  directions = directions / directions.norm(2, 1, /*keepdim=*/true);
  const auto project = [&](const at::Tensor& x) { return std::get<0>(x.to(torch::kFloat64).matmul(directions.t()).sort(0)); };
  return (project(a) - project(b)).square().mean().sqrt().item<double>();
}

}  // namespace distillery
