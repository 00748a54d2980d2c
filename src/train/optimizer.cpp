#include "train/optimizer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/module.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>
#include <torch/types.h>

#include <array>
#include <cmath>

#include "core/config.h"
#include "core/error.h"
#include "core/tensor_checks.h"

namespace distillery {

namespace {

constexpr std::array<std::string_view, 5> kKinds = {"adam", "adamw", "sgd", "rmsprop", "radam"};

// RAdam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond",
// Algorithm 2), as PyTorch's torch.optim.RAdam computes it: Adam's moments, with the adaptive
// step rectified by r_t once the variance estimate is tractable (ρ_t > 5) and plain momentum
// SGD before. LibTorch has no C++ RAdam; its state is Adam's.
class RAdam final : public torch::optim::Optimizer {
 public:
  RAdam(std::vector<at::Tensor> params, torch::optim::AdamOptions options)
      : Optimizer({torch::optim::OptimizerParamGroup(std::move(params))}, std::make_unique<torch::optim::AdamOptions>(options)) {}

  at::Tensor step(LossClosure closure = nullptr) override {
    torch::NoGradGuard no_grad;
    at::Tensor loss;
    if (closure) {
      at::AutoGradMode enable_grad(true);
      loss = closure();
    }
    for (auto& group : param_groups()) {
      const auto& options = static_cast<const torch::optim::AdamOptions&>(group.options());
      const auto [beta1, beta2] = options.betas();
      for (auto& p : group.params()) {
        if (!p.grad().defined()) continue;
        auto grad = p.grad();
        if (options.weight_decay() != 0) grad = grad.add(p, options.weight_decay());
        auto& slot = state()[p.unsafeGetTensorImpl()];
        if (!slot) {
          auto fresh = std::make_unique<torch::optim::AdamParamState>();
          fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
          fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
          slot = std::move(fresh);
        }
        auto& s = static_cast<torch::optim::AdamParamState&>(*slot);
        s.step(s.step() + 1);
        const double t = static_cast<double>(s.step());
        s.exp_avg().lerp_(grad, 1 - beta1);
        s.exp_avg_sq().mul_(beta2).addcmul_(grad, grad, 1 - beta2);
        const double bias1 = 1 - std::pow(beta1, t), bias2 = 1 - std::pow(beta2, t);
        const double rho_inf = 2 / (1 - beta2) - 1, rho_t = rho_inf - 2 * t * std::pow(beta2, t) / bias2;
        if (rho_t > 5) {
          const double rect = std::sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t));
          const auto adaptive = std::sqrt(bias2) / (s.exp_avg_sq().sqrt() + options.eps());
          p.add_(s.exp_avg() * adaptive, -options.lr() * rect / bias1);
        } else {
          p.add_(s.exp_avg(), -options.lr() / bias1);
        }
      }
    }
    return loss;
  }
};

std::vector<at::Tensor> parameters_of(torch::nn::Module& module) { return module.parameters(); }

// The state fields of one kind, read and written through the state object.
struct Field {
  const char* name;
  at::Tensor (*get)(const torch::optim::OptimizerParamState&);
  void (*set)(torch::optim::OptimizerParamState&, const at::Tensor&);
};

template <class State>
std::vector<Field> adam_fields() {
  return {{"step", [](const auto& s) { return torch::tensor(static_cast<const State&>(s).step(), torch::kInt64); },
           [](auto& s, const at::Tensor& t) { static_cast<State&>(s).step(t.item<int64_t>()); }},
          {"exp_avg", [](const auto& s) { return static_cast<const State&>(s).exp_avg(); }, [](auto& s, const at::Tensor& t) { static_cast<State&>(s).exp_avg(t); }},
          {"exp_avg_sq", [](const auto& s) { return static_cast<const State&>(s).exp_avg_sq(); },
           [](auto& s, const at::Tensor& t) { static_cast<State&>(s).exp_avg_sq(t); }}};
}

struct KindState {
  std::unique_ptr<torch::optim::OptimizerParamState> (*make)();
  std::vector<Field> fields;
};

KindState kind_state(const std::string& kind) {
  if (kind == "adam" || kind == "radam") return {[]() -> std::unique_ptr<torch::optim::OptimizerParamState> { return std::make_unique<torch::optim::AdamParamState>(); },
                                                 adam_fields<torch::optim::AdamParamState>()};
  if (kind == "adamw") return {[]() -> std::unique_ptr<torch::optim::OptimizerParamState> { return std::make_unique<torch::optim::AdamWParamState>(); },
                               adam_fields<torch::optim::AdamWParamState>()};
  if (kind == "sgd")
    return {[]() -> std::unique_ptr<torch::optim::OptimizerParamState> { return std::make_unique<torch::optim::SGDParamState>(); },
            {{"momentum_buffer", [](const auto& s) { return static_cast<const torch::optim::SGDParamState&>(s).momentum_buffer(); },
              [](auto& s, const at::Tensor& t) { static_cast<torch::optim::SGDParamState&>(s).momentum_buffer(t); }}}};
  using R = torch::optim::RMSpropParamState;
  return {[]() -> std::unique_ptr<torch::optim::OptimizerParamState> { return std::make_unique<R>(); },
          {{"step", [](const auto& s) { return torch::tensor(static_cast<const R&>(s).step(), torch::kInt64); },
            [](auto& s, const at::Tensor& t) { static_cast<R&>(s).step(t.item<int64_t>()); }},
           {"square_avg", [](const auto& s) { return static_cast<const R&>(s).square_avg(); }, [](auto& s, const at::Tensor& t) { static_cast<R&>(s).square_avg(t); }},
           {"momentum_buffer", [](const auto& s) { return static_cast<const R&>(s).momentum_buffer(); },
            [](auto& s, const at::Tensor& t) { static_cast<R&>(s).momentum_buffer(t); }}}};
}

}  // namespace

std::vector<std::string> optimizer_kind_names() { return {kKinds.begin(), kKinds.end()}; }

void add_optimizer_fields(ConfigSchema& s) {
  s.add({"optimizer.kind", ConfigType::String, "optimiser of every network the method trains", "adam", false, optimizer_kind_names()});
  s.add({"optimizer.beta1", ConfigType::Float, "Adam family: first-moment decay", "0.9"}, NumberRange::from_below(0, 1));
  s.add({"optimizer.beta2", ConfigType::Float, "Adam family: second-moment decay; RMSprop: its smoothing constant α", "0.999"}, NumberRange::from_below(0, 1));
  s.add({"optimizer.eps", ConfigType::Float, "added to the root of the second moment", "1e-8"}, NumberRange::at_least(0));
  s.add({"optimizer.weight_decay", ConfigType::Float, "AdamW: decoupled weight decay; the others: L2 penalty", "0"}, NumberRange::at_least(0));
  s.add({"optimizer.momentum", ConfigType::Float, "SGD and RMSprop momentum", "0"}, NumberRange::from_below(0, 1));
}

OptimizerSpec optimizer_spec_from(const Config& c) {
  OptimizerSpec spec{c.get_string("optimizer.kind"), c.get_float("optimizer.beta1"), c.get_float("optimizer.beta2"), c.get_float("optimizer.eps"),
                     c.get_float("optimizer.weight_decay"), c.get_float("optimizer.momentum")};
  return spec;
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerSpec& s, torch::nn::Module& module, double lr) {
  const auto params = parameters_of(module);
  if (s.kind == "adam")
    return std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(lr).betas({s.beta1, s.beta2}).eps(s.eps).weight_decay(s.weight_decay));
  if (s.kind == "adamw")
    return std::make_unique<torch::optim::AdamW>(params, torch::optim::AdamWOptions(lr).betas({s.beta1, s.beta2}).eps(s.eps).weight_decay(s.weight_decay));
  if (s.kind == "sgd") return std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(lr).momentum(s.momentum).weight_decay(s.weight_decay));
  if (s.kind == "rmsprop")
    return std::make_unique<torch::optim::RMSprop>(params, torch::optim::RMSpropOptions(lr).alpha(s.beta2).eps(s.eps).weight_decay(s.weight_decay).momentum(s.momentum));
  if (s.kind == "radam") return std::make_unique<RAdam>(params, torch::optim::AdamOptions(lr).betas({s.beta1, s.beta2}).eps(s.eps).weight_decay(s.weight_decay));
  throw Error(fmt::format("unknown optimiser '{}'", s.kind)).field("optimizer.kind").expected(fmt::format("one of: {}", fmt::join(kKinds, ", ")));
}

std::vector<std::pair<std::string, at::Tensor>> optimizer_state_tensors(const OptimizerSpec& spec, const torch::optim::Optimizer& optimizer,
                                                                        const torch::nn::Module& module) {
  const auto kind = kind_state(spec.kind);
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : module.named_parameters()) {
    const auto it = optimizer.state().find(item.value().unsafeGetTensorImpl());
    if (it == optimizer.state().end()) continue;  // never updated
    for (const auto& field : kind.fields)
      if (const auto t = field.get(*it->second); t.defined()) out.emplace_back(item.key() + "." + field.name, t);
  }
  return out;
}

void load_optimizer_state(const OptimizerSpec& spec, torch::optim::Optimizer& optimizer, const torch::nn::Module& module,
                          const std::map<std::string, at::Tensor>& tensors, const std::string& source) {
  const auto kind = kind_state(spec.kind);
  size_t used = 0;
  for (const auto& item : module.named_parameters()) {
    if (!tensors.count(item.key() + "." + kind.fields.front().name)) continue;  // a parameter not yet updated
    auto state = kind.make();
    for (const auto& field : kind.fields) {
      const auto it = tensors.find(item.key() + "." + field.name);
      if (it == tensors.end()) continue;  // a buffer the optimiser has not made (momentum 0)
      ++used;
      if (it->second.dim() == 0 && it->second.scalar_type() == torch::kInt64) {
        field.set(*state, it->second);
        continue;
      }
      check_shape(it->second, item.value().sizes().vec(), fmt::format("optimiser state '{}' in {}", it->first, source));
      field.set(*state, it->second.to(item.value().device(), item.value().scalar_type(), /*non_blocking=*/false, /*copy=*/true));
    }
    optimizer.state()[item.value().unsafeGetTensorImpl()] = std::move(state);
  }
  DISTILLERY_CHECK(used == tensors.size(), Error("the optimiser state does not fit the optimiser").file(source)
                                               .expected(fmt::format("{} state of this network", spec.kind))
                                               .hint("resume with the optimizer.kind the run was started with"));
}

}  // namespace distillery
