// defines: OptimizerSpec, optimizer_kind_names, add_optimizer_fields, optimizer_spec_from, make_optimizer,
//          optimizer_state_tensors, load_optimizer_state
// The optimisers a recipe can choose (optimizer.kind: adam, adamw, sgd, rmsprop, radam), built
// by the trainer for every module a method declares, and their state as named tensors, so a
// checkpoint saves and restores any of them the same way.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace torch::nn { class Module; }
namespace torch::optim { class Optimizer; }

namespace distillery {

class Config;
class ConfigSchema;

struct OptimizerSpec {
  std::string kind = "adam";
  double beta1 = 0.9, beta2 = 0.999;  // Adam family; RMSprop's smoothing is beta2
  double eps = 1e-8;
  double weight_decay = 0.0;          // AdamW's is decoupled, the others' is L2
  double momentum = 0.0;              // SGD and RMSprop
};

std::vector<std::string> optimizer_kind_names();
void add_optimizer_fields(ConfigSchema& schema);  // optimizer.kind, beta1, beta2, eps, weight_decay, momentum
OptimizerSpec optimizer_spec_from(const Config& config);

// An optimiser over `module`'s parameters at learning rate `lr`.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerSpec& spec, torch::nn::Module& module, double lr);

// Every parameter's state as "<parameter>.<field>" tensors (step counts as int64 scalars), and
// back; loading checks the names and shapes and puts each tensor where its parameter lives.
std::vector<std::pair<std::string, at::Tensor>> optimizer_state_tensors(const OptimizerSpec& spec, const torch::optim::Optimizer& optimizer,
                                                                        const torch::nn::Module& module);
void load_optimizer_state(const OptimizerSpec& spec, torch::optim::Optimizer& optimizer, const torch::nn::Module& module,
                          const std::map<std::string, at::Tensor>& tensors, const std::string& source);

}  // namespace distillery
