//! Continuing a prompt: the key-value-cached decoder, seeded sampling (temperature, top-k,
//! top-p), stop strings, and text handed to a sink as it is produced.

use std::time::Instant;

use trainyard_data::SeededRng;
use trainyard_data::tokenizer::TextTokenizer;

use super::decode::Decoder;
use super::weights::GptWeights;
use crate::PredictError;
use crate::family::{FinishReason, GenerateRequest, Generated, TextSink};

/// Generates up to `max_new_tokens` after the prompt's last `block_size` tokens.
///
/// When the context fills up, the decoder restarts from the most recent half of it (positions
/// are absolute, so cached keys cannot slide); that keeps the cost per token bounded.
pub fn generate(
    weights: &GptWeights,
    tokenizer: &TextTokenizer,
    request: &GenerateRequest,
    sink: &mut TextSink<'_>,
) -> Result<Generated, PredictError> {
    let started = Instant::now();
    let prompt = tokenizer.encode(&request.prompt);
    if prompt.is_empty() {
        return Err(PredictError::Unsupported(
            "prompt: must not be empty".into(),
        ));
    }
    let block = weights.config.block_size;
    let mut context = prompt[prompt.len().saturating_sub(block)..].to_vec();
    let mut decoder = Decoder::new(weights);
    let mut logits = decoder.feed(&context);
    let mut rng = SeededRng::new(request.seed);
    let (mut new_tokens, mut text, mut emitted) = (Vec::new(), String::new(), 0);
    let mut finish_reason = FinishReason::Length;
    while new_tokens.len() < request.max_new_tokens {
        let token = sample(&logits, request, &mut rng);
        new_tokens.push(token);
        // Decoded whole each time: a byte-level token may end inside a character.
        text = tokenizer.decode(&new_tokens);
        if let Some(at) = first_stop(&text, &request.stop) {
            text.truncate(at);
            finish_reason = FinishReason::Stop;
            break;
        }
        let complete = text.trim_end_matches(char::REPLACEMENT_CHARACTER).len();
        let safe = complete - held_back(&text[..complete], &request.stop);
        if safe > emitted {
            if !sink(&text[emitted..safe]) {
                finish_reason = FinishReason::Cancelled;
                break;
            }
            emitted = safe;
        }
        if new_tokens.len() == request.max_new_tokens {
            break;
        }
        context.push(token);
        logits = if decoder.is_full() {
            decoder.reset();
            context.drain(..context.len() - (block / 2).max(1));
            decoder.feed(&context)
        } else {
            decoder.step(token)
        };
    }
    if finish_reason != FinishReason::Cancelled && text.len() > emitted {
        sink(&text[emitted..]);
    }
    let tokens = new_tokens.len();
    Ok(Generated {
        text,
        tokens,
        prompt_truncated: prompt.len() > block,
        finish_reason,
        tokens_per_second: tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
    })
}

/// Where the earliest stop string starts in `text`.
fn first_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter_map(|stop| text.find(stop.as_str()))
        .min()
}

/// How many bytes at the end of `text` could be the start of a stop string, and so must wait.
fn held_back(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .filter_map(|stop| {
            (1..stop.len())
                .rev()
                .find(|&k| stop.is_char_boundary(k) && text.ends_with(&stop[..k]))
        })
        .max()
        .unwrap_or(0)
}

/// The next token: greedy at temperature 0; otherwise drawn from the softmax of the logits
/// over the temperature, among the `top_k` likeliest and then the smallest set of likeliest
/// tokens whose probability reaches `top_p`.
pub fn sample(logits: &[f32], request: &GenerateRequest, rng: &mut SeededRng) -> u32 {
    let mut ranked: Vec<(usize, f64)> = logits.iter().map(|&l| l as f64).enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if request.temperature <= 0.0 {
        return ranked[0].0 as u32;
    }
    ranked.truncate(request.top_k.unwrap_or(ranked.len()).max(1));
    let top = ranked[0].1;
    let mut weights: Vec<f64> = ranked
        .iter()
        .map(|(_, l)| ((l - top) / request.temperature).exp())
        .collect();
    if let Some(top_p) = request.top_p {
        let total: f64 = weights.iter().sum();
        let mut cumulative = 0.0;
        let keep = weights
            .iter()
            .position(|w| {
                cumulative += w / total;
                cumulative >= top_p
            })
            .map_or(weights.len(), |i| i + 1);
        weights.truncate(keep);
    }
    let mut pick = rng.next_f64() * weights.iter().sum::<f64>();
    for ((token, _), weight) in ranked.iter().zip(&weights) {
        if pick < *weight {
            return *token as u32;
        }
        pick -= weight;
    }
    ranked[weights.len() - 1].0 as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(temperature: f64, top_k: Option<usize>, top_p: Option<f64>) -> GenerateRequest {
        GenerateRequest {
            prompt: "a".into(),
            max_new_tokens: 1,
            temperature,
            top_k,
            top_p,
            stop: vec![],
            seed: 0,
        }
    }

    #[test]
    fn greedy_takes_the_likeliest_and_top_k_1_is_greedy() {
        let logits = [0.1, 2.0, 1.5, -1.0];
        let mut rng = SeededRng::new(1);
        assert_eq!(sample(&logits, &request(0.0, None, None), &mut rng), 1);
        for _ in 0..20 {
            assert_eq!(sample(&logits, &request(1.0, Some(1), None), &mut rng), 1);
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Probabilities about 0.84, 0.11, 0.04, 0.01: top_p 0.9 keeps the first two.
        let logits = [4.0, 2.0, 1.0, -0.5];
        let mut rng = SeededRng::new(7);
        let mut seen = [0; 4];
        for _ in 0..2000 {
            seen[sample(&logits, &request(1.0, None, Some(0.9)), &mut rng) as usize] += 1;
        }
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
        assert_eq!((seen[2], seen[3]), (0, 0), "{seen:?}");
    }

    #[test]
    fn stop_strings_are_found_and_their_prefixes_held_back() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(first_stop("abc\n\nd", &stops), Some(3));
        assert_eq!(first_stop("xENDy\n\n", &stops), Some(1));
        assert_eq!(first_stop("abc\n", &stops), None);
        assert_eq!(held_back("abc\n", &stops), 1);
        assert_eq!(held_back("abEN", &stops), 2);
        assert_eq!(held_back("abc", &stops), 0);
    }
}
