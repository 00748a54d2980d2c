// defines: frechet_distance, KernelInceptionDistance, kernel_inception_distance, PrecisionRecall,
//          precision_recall, classification_accuracy, sliced_wasserstein_distance
// Distances between two sets of features, whatever network produced them.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "eval/feature_statistics.h"

namespace distillery {

// ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂) (Heusel et al. 2017), in float64 with Eigen.
// tr √(Σ₁Σ₂) = Σ √λᵢ over the eigenvalues of the symmetric √Σ₁ Σ₂ √Σ₁ (clipped at 0); if the
// eigensolver fails, ε·I is added to both covariances, as pytorch-fid does.
double frechet_distance(const FeatureStatistics& a, const FeatureStatistics& b, double epsilon = 1e-6);

// Unbiased MMD² with the kernel k(x, y) = (xᵀy / d + 1)³ (Bińkowski et al. 2018), averaged over
// random subsets of both sets.
struct KernelInceptionDistance {
  double mean = 0, std = 0;
  int64_t subsets = 0, subset_size = 0;
};
KernelInceptionDistance kernel_inception_distance(const at::Tensor& a, const at::Tensor& b, int64_t subsets = 100,
                                                  int64_t subset_size = 1000, uint64_t seed = 0);

// Improved precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of
// balls reaching every feature's k-th nearest neighbour; precision is the share of generated
// features inside the real manifold, recall the share of real features inside the generated one.
struct PrecisionRecall {
  double precision = 0, recall = 0;
  int64_t k = 3;
};
PrecisionRecall precision_recall(const at::Tensor& real, const at::Tensor& generated, int64_t k = 3);

// Share of samples the classifier assigns to their intended label.
double classification_accuracy(const at::Tensor& logits, const at::Tensor& labels);

// The sliced 2-Wasserstein distance between two equally large sets of vectors [N, D], for
// low-dimensional data (the 2-D toys) where it sees the shape that two moments cannot: the root
// mean, over `projections` random unit directions (counter-based from `seed`), of the squared
// 2-Wasserstein distance between the two sets' projections (their sorted values), in float64.
double sliced_wasserstein_distance(const at::Tensor& a, const at::Tensor& b, int64_t projections = 256, uint64_t seed = 0);

}  // namespace distillery
