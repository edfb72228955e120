// nflow: normalizing flows in C++20 on Eigen. This umbrella header includes the whole library.
#pragma once

// The interface every bijector offers, and the base that derives most of it.
#include "nflow/bijector_base.hpp"
#include "nflow/detail/trainable.hpp"
#include "nflow/flow.hpp"

// Networks used inside bijectors.
#include "nflow/nn/mlp.hpp"

// Bijectors.
#include "nflow/bijectors/affine_coupling.hpp"
#include "nflow/bijectors/inverse.hpp"
#include "nflow/bijectors/permutation.hpp"
#include "nflow/bijectors/planar.hpp"

// Compositions: fixed at compile time, chosen at run time, and the type-erased element.
#include "nflow/composition/any_bijector.hpp"
#include "nflow/composition/chain.hpp"
#include "nflow/composition/dynamic_chain.hpp"

// Base distributions and the density model.
#include "nflow/distributions/standard_normal.hpp"
#include "nflow/distributions/transformed.hpp"

// Reading data; saving and loading parameters.
#include "nflow/io/csv.hpp"
#include "nflow/io/serialize.hpp"

// Training: objectives with their gradients, the optimiser, and the fitting loops.
#include "nflow/train/adam.hpp"
#include "nflow/train/fit.hpp"
#include "nflow/train/objectives.hpp"
