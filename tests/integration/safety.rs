//! Harmless and safe (issue 16): measuring a pipe adds no reader, job control never leaves a
//! target thread stopped, target strings cannot forge output, inputs and outputs are bounded.
//! One file per area under `safety/`.

mod bounds;
mod inject;
mod jobctl;
mod pipes;
mod wording;
