#include "distill/msd.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>
#include <optional>

#include "core/config.h"
#include "core/error.h"
#include "core/rng.h"
#include "distill/add.h"
#include "distill/common/real_data_stream.h"
#include "distill/common/sigma_sampling.h"
#include "distill/common/student_network.h"
#include "distill/dmd2.h"
#include "distill/registry.h"
#include "models/network_denoiser.h"
#include "models/routed_denoiser.h"
#include "teachers/edm_loss.h"
#include "teachers/teacher.h"
#include "train/trainer.h"

namespace distillery {

void add_msd_fields(ConfigSchema& s) {
  add_dmd2_fields(s);
  add_add_fields(s);
  s.add({"msd.students", ConfigType::Int, "number K of students, each owning a subset of the classes", "2"}, NumberRange::between(1, 1024));
  s.add({"msd.method", ConfigType::String, "how each student is distilled (its keys: dmd2.*, or add.* and adversarial.*)", "dmd2", false, {"dmd2", "add"}});
  s.add({"msd.assignment", ConfigType::IntList, "the student of each class, in class order ([]: contiguous blocks of classes)", "[]"},
        NumberRange::between(0, 1023));
  s.add({"msd.model_channels", ConfigType::Int,
         "base channel count of smaller students (a UNet teacher's architecture otherwise; 0: the teacher's own network, initialised from it)", "0"},
        NumberRange::between(0, 4096));
  s.add({"msd.score_matching_steps", ConfigType::Int, "steps of each smaller student's share spent on teacher score matching before it is distilled", "0"},
        NumberRange::at_least(0));
  s.add({"msd.score_matching_lr", ConfigType::Float, "learning rate of teacher score matching", "1e-4"}, NumberRange::above(0));
  s.add({"msd.score_matching_sigma", ConfigType::FloatList, "P_mean and P_std of teacher score matching's log-normal σ (EDM's training)", "[-1.2, 1.2]"});
}

std::vector<int64_t> msd_route(const Config& config, int64_t num_classes) {
  const int64_t students = config.get_int("msd.students");
  DISTILLERY_CHECK(num_classes > 0, Error("multi-student distillation splits a class-conditional teacher's classes; this teacher has none")
                                        .field("method").hint("distil an unconditional teacher with one student (dmd2, add, ...)"));
  DISTILLERY_CHECK(students <= num_classes, Error("more students than classes").file(config.source()).field("msd.students")
                                                .expected(fmt::format("at most {} (the teacher's classes)", num_classes)).got(std::to_string(students)));
  auto route = config.get_int_list("msd.assignment");
  if (route.empty()) {
    for (int64_t c = 0; c < num_classes; ++c) route.push_back(c * students / num_classes);
    return route;
  }
  DISTILLERY_CHECK(static_cast<int64_t>(route.size()) == num_classes,
                   Error("msd.assignment names the student of each class").file(config.source()).field("msd.assignment")
                       .expected(fmt::format("{} student indices", num_classes)).got(fmt::format("[{}]", fmt::join(route, ", "))));
  bool every_student = *std::max_element(route.begin(), route.end()) < students;
  for (int64_t k = 0; k < students; ++k) every_student = every_student && std::find(route.begin(), route.end(), k) != route.end();
  DISTILLERY_CHECK(every_student, Error("msd.assignment must give every student at least one class, and name no other").file(config.source())
                                      .field("msd.assignment").expected(fmt::format("each of 0..{} at least once", students - 1))
                                      .got(fmt::format("[{}]", fmt::join(route, ", "))));
  return route;
}

namespace {

class Msd final : public TrainingMethod {
 public:
  Msd(const Config& config, const std::string& teacher_spec, const c10::Device& device)
      : config_(config), teacher_spec_(teacher_spec), device_(device), teacher_(load_teacher(teacher_spec, device)),
        method_(config.get_string("msd.method")), students_(config.get_int("msd.students")),
        matching_steps_(config.get_int("msd.score_matching_steps")), matching_lr_(config.get_float("msd.score_matching_lr")),
        total_steps_(config.get_int("train.steps")), model_channels_(config.get_int("msd.model_channels")) {
    DISTILLERY_CHECK(config.get_int_list("student.classes").empty(),
                     Error("multi-student distillation splits the classes itself").file(config.source()).field("student.classes").expected("[]")
                         .hint("msd.assignment names the student of each class"));
    route_ = msd_route(config, teacher_->num_classes());
    // In-loop evaluation would measure the current student alone, on its classes, against
    // statistics of all of them; and a schedule over train.steps would give each student
    // another part of it (a warm-up only the first, a cosine decay mostly the last) unless the
    // schedule restarts in each phase.
    DISTILLERY_CHECK(config.get_int("eval.every") == 0, Error("multi-student runs have no in-loop evaluation").file(config.source()).field("eval.every")
                                                            .expected("0").hint("measure the output file with `distillery generate` and `distillery eval`"));
    DISTILLERY_CHECK(students_ == 1 || config.get_string("train.lr_schedule_scope") == "phase" ||
                         (config.get_int("train.warmup_steps") == 0 && config.get_string("train.lr_schedule") == "constant"),
                     Error("the learning-rate schedule spans train.steps, which several students split among them").file(config.source())
                         .field("train.lr_schedule").expected("constant, without train.warmup_steps")
                         .hint("train.lr_schedule_scope: phase gives each student (and each score-matching phase) its own"));
    // Each student reads the keys of msd.method only: a key of the other method would be lost.
    const auto& student_schema = distillation_schema(method_);
    for (const auto& key : config.explicit_keys())
      DISTILLERY_CHECK(key.starts_with("msd.") || student_schema.find(key),
                       Error(fmt::format("config key '{}' does not apply to the students' method", key)).file(config.source()).field(key)
                           .expected(fmt::format("keys of msd.method ({})", method_)));
    if (const auto channels = model_channels_; channels > 0) {
      const auto* network = dynamic_cast<const NetworkDenoiser*>(teacher_.get());
      const auto architecture = network ? nlohmann::json::parse(network->config_json()) : nlohmann::json();
      DISTILLERY_CHECK(network && architecture["model"].value("kind", "") == "unet",
                       Error("smaller students take a UNet teacher's architecture at another width").file(config.source()).field("msd.model_channels")
                           .got(teacher_->describe()).hint("set msd.model_channels=0 to start each student as the teacher"));
      for (const auto& key : config.explicit_keys())
        DISTILLERY_CHECK(!key.starts_with("model.") && !key.starts_with("precond.") && key != "student.init",
                         Error("smaller students take the teacher's architecture at msd.model_channels, from scratch").file(config.source()).field(key)
                             .hint("leave model.*, precond.* and student.init out of the recipe"));
      for (const char* part : {"model", "precond"})
        for (const auto& [key, value] : architecture[part].items()) smaller_student_.push_back(fmt::format("{}.{}={}", part, key, value.dump()));
      smaller_student_.insert(smaller_student_.end(), {fmt::format("model.model_channels={}", channels), "student.init=scratch"});
    }
    DISTILLERY_CHECK(matching_steps_ == 0 || !smaller_student_.empty(),
                     Error("teacher score matching prepares smaller students, which start from scratch").file(config.source()).field("msd.score_matching_steps")
                         .hint("set msd.model_channels too, or msd.score_matching_steps=0 for students that start as the teacher"));
    DISTILLERY_CHECK(total_steps_ / students_ > matching_steps_,
                     Error("each student's share of train.steps must exceed its score-matching steps").file(config.source()).field("train.steps")
                         .expected(fmt::format("more than {} (msd.students {} × (msd.score_matching_steps {} + 1))", students_ * (matching_steps_ + 1) - 1,
                                               students_, matching_steps_))
                         .got(std::to_string(total_steps_)));
    const auto sigma = config.get_float_list("msd.score_matching_sigma");
    DISTILLERY_CHECK(sigma.size() == 2 && sigma[1] > 0, Error("msd.score_matching_sigma is P_mean and a positive P_std").file(config.source())
                                                            .field("msd.score_matching_sigma").got(fmt::format("[{}]", fmt::join(sigma, ", "))));
    p_mean_ = sigma[0];
    p_std_ = sigma[1];
    phases_per_student_ = matching_steps_ > 0 ? 2 : 1;
    // Fixed for the run (the trainer numbers sample positions with it); each phase's method is
    // checked against it as it is built.
    draws_ = method_ == "dmd2" ? 1 + config.get_int("dmd2.critic_steps") : 1;
    finished_.resize(static_cast<size_t>(students_));
    begin_phase(0);
  }

  NetworkDenoiser* generator() override { return matching_ ? matching_student_.get() : inner_->generator(); }
  SampleRequest sampling() const override {
    if (!matching_) return inner_->sampling();
    // A score-matched student is sampled like its teacher, on its own classes.
    SampleRequest request;
    request.labels = label_policy_of(classes_of(student_), static_cast<int64_t>(route_.size()));
    return request;
  }
  std::vector<CheckpointModule> checkpoint_modules() override {
    std::vector<CheckpointModule> modules;
    if (matching_) modules.push_back({"student", &matching_student_->module(), matching_student_->file_metadata()});
    else modules = inner_->checkpoint_modules();
    for (int64_t j = 0; j < student_; ++j) {
      auto& done = *finished_[static_cast<size_t>(j)];
      modules.push_back({fmt::format("student_{}", j), &done.module(), done.file_metadata()});
    }
    return modules;
  }
  std::vector<OptimizerSlot> optimizers() override {
    if (matching_) return {{"student", &matching_student_->module(), matching_lr_}};
    return inner_->optimizers();
  }
  std::vector<EmaSlot> averages() override { return matching_ ? std::vector<EmaSlot>{} : inner_->averages(); }
  int64_t draws_per_step() const override { return draws_; }
  double activation_memory_factor() const override { return matching_ ? 1.0 : inner_->activation_memory_factor(); }

  // Student k trains in steps [k·S/K, (k+1)·S/K); a smaller one spends the first
  // msd.score_matching_steps of them on score matching (its own phase).
  int64_t phase_of(int64_t step) const override {
    int64_t k = 0;
    while (k + 1 < students_ && step >= first_step(k + 1)) ++k;
    return k * phases_per_student_ + (phases_per_student_ == 2 && step - first_step(k) >= matching_steps_ ? 1 : 0);
  }

  void begin_phase(int64_t phase) override {
    DISTILLERY_CHECK(phase >= 0 && phase < students_ * phases_per_student_,
                     Error(fmt::format("the run is in phase {}, which this recipe's students do not have", phase)).file(config_.source())
                         .field("msd.students").expected(fmt::format("phases 0..{}", students_ * phases_per_student_ - 1)));
    student_ = phase / phases_per_student_;
    matching_ = is_matching(phase);
    // The earlier students' networks, filled in by end_phase or, on resume, by the checkpoint.
    for (int64_t j = 0; j < student_; ++j)
      if (!finished_[static_cast<size_t>(j)]) finished_[static_cast<size_t>(j)] = make_student_network(student_config(j), teacher_spec_, *teacher_);
    inner_.reset();
    matching_student_.reset();
    matching_data_.reset();
    if (matching_) {
      const auto config = student_config(student_);
      matching_student_ = make_student_network(config, teacher_spec_, *teacher_);
      matching_data_.emplace(config, matching_student_->sample_shape(), matching_student_->num_classes(), noise_stream::msd_score_matching_flip, device_,
                             classes_of(student_));
      return;
    }
    inner_ = make_distillation_method(student_config(student_), teacher_spec_, device_);
    DISTILLERY_CHECK(inner_->draws_per_step() == draws_, Error("the distilled student draws another number of batches per step than declared")
                                                             .expected(std::to_string(draws_)).got(std::to_string(inner_->draws_per_step())));
    // Absent on resume: the checkpoint holds the networks as they were.
    if (matched_) inner_->start_from(*matched_);
    matched_.reset();
  }

  void end_phase(int64_t phase, const NetworkDenoiser& result) override {
    if (is_matching(phase)) matched_ = result.clone();
    else finished_.at(static_cast<size_t>(phase / phases_per_student_)) = result.clone();
  }

  // What the phases and the students' networks depend on is fixed for the run: a resumed run
  // with another split would load students into the wrong places.
  std::string state_json() const override { return layout().dump(); }
  void restore_state(const std::string& json) override {
    const auto saved = nlohmann::json::parse(json), now = layout();
    for (const auto& [key, value] : now.items())
      DISTILLERY_CHECK(!saved.contains(key) || saved[key] == value,
                       Error("a multi-student run keeps its students' split when it resumes").file(config_.source())
                           .field(key == "route" ? "msd.assignment" : key).expected(saved[key].dump()).got(value.dump()));
  }

  std::map<std::string, double> step(StepContext& context) override { return matching_ ? score_matching_step(context) : inner_->step(context); }
  void after_update(const StepContext& context) override {
    if (inner_) inner_->after_update(context);
  }

  std::map<std::string, std::string> output_metadata() const override {
    return matching_ ? std::map<std::string, std::string>{} : inner_->output_metadata();
  }
  void write_output(const std::filesystem::path& path, const std::map<std::string, std::string>& metadata, const NetworkDenoiser* ema) override {
    DISTILLERY_CHECK(inner_ && student_ == students_ - 1, Error("a multi-student run ended before its last student was distilled").file(path.string()));
    std::vector<const NetworkDenoiser*> networks;
    for (int64_t j = 0; j + 1 < students_; ++j) networks.push_back(finished_.at(static_cast<size_t>(j)).get());
    networks.push_back(ema ? ema : inner_->generator());
    // The routed file generates every class; the last student's own labels are not its default.
    auto routed = metadata;
    routed.erase("student_labels");
    RoutedDenoiser::save(path, networks, route_, routed);
  }

 private:
  bool is_matching(int64_t phase) const { return phases_per_student_ == 2 && phase % 2 == 0; }

  nlohmann::json layout() const {
    return {{"train.steps", total_steps_}, {"msd.students", students_}, {"route", route_}, {"msd.score_matching_steps", matching_steps_},
            {"msd.method", method_}, {"msd.model_channels", model_channels_}};
  }

  int64_t first_step(int64_t student) const { return student * total_steps_ / students_; }

  std::vector<int64_t> classes_of(int64_t student) const {
    std::vector<int64_t> classes;
    for (size_t c = 0; c < route_.size(); ++c)
      if (route_[c] == student) classes.push_back(static_cast<int64_t>(c));
    return classes;
  }

  // The recipe of one student as its method reads it: the explicit keys that method knows, its
  // classes, and a smaller student's architecture.
  Config student_config(int64_t student) const {
    const auto& schema = distillation_schema(method_);
    auto overrides = smaller_student_;
    overrides.insert(overrides.end(), {"method=" + method_, fmt::format("student.classes=[{}]", fmt::join(classes_of(student), ", "))});
    return Config::parse(schema, config_.explicit_json(schema), fmt::format("{} (student {})", config_.source(), student), overrides);
  }

  // EDM's denoising loss with the teacher's denoised estimate of the same noised example as the target.
  std::map<std::string, double> score_matching_step(StepContext& context) {
    const auto positions = context.positions();
    const auto [x0, labels] = matching_data_->batch(context.seed, positions);
    const auto sigma = lognormal_sigmas(context.seed, noise_stream::msd_score_matching_sigma, positions, p_mean_, p_std_, x0.options());
    const auto noise = per_sample_normal(context.seed, noise_stream::msd_score_matching_noise, positions, matching_student_->sample_shape(), x0.options());
    at::Tensor target;
    {
      torch::NoGradGuard no_grad;
      std::vector<int64_t> per_row(static_cast<size_t>(x0.dim()), 1);
      per_row[0] = -1;
      // edm_loss noises x0 the same way for the student.
      target = teacher_->denoise(x0 + sigma.view(per_row) * noise, sigma, labels);
    }
    const auto loss = edm_loss(*matching_student_, x0, sigma, noise, labels, matching_student_->sigma_data(), target);
    context.update("student", loss);
    return {{"score_matching_loss", loss.item<double>()}};
  }

  Config config_;
  std::string teacher_spec_;
  c10::Device device_;
  std::unique_ptr<Denoiser> teacher_;
  std::string method_;
  int64_t students_, matching_steps_;
  double matching_lr_, p_mean_ = 0, p_std_ = 1;
  int64_t total_steps_, model_channels_, phases_per_student_ = 1, draws_ = 1;
  std::vector<int64_t> route_;
  std::vector<std::string> smaller_student_;  // overrides giving a student the smaller architecture

  int64_t student_ = 0;  // the student of the current phase
  bool matching_ = false;
  std::unique_ptr<TrainingMethod> inner_;                // distilling the current student
  std::unique_ptr<NetworkDenoiser> matching_student_;    // score-matching the current student
  std::optional<RealDataStream> matching_data_;
  std::unique_ptr<NetworkDenoiser> matched_;             // its result, which the distillation starts from
  std::vector<std::unique_ptr<NetworkDenoiser>> finished_;
};

}  // namespace

std::unique_ptr<TrainingMethod> make_msd(const Config& config, const std::string& teacher, const c10::Device& device) {
  return std::make_unique<Msd>(config, teacher, device);
}

}  // namespace distillery
