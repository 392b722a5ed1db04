//! Ranking metrics for anomaly scores against known outlier labels.

/// Area under the ROC curve (ties count half), or None without both classes.
pub fn roc_auc(scores: &[f64], outlier: &[bool]) -> Option<f64> {
    let positives = outlier.iter().filter(|o| **o).count();
    let negatives = outlier.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let ranks = average_ranks(scores);
    let rank_sum: f64 = ranks
        .iter()
        .zip(outlier)
        .filter(|(_, o)| **o)
        .map(|(r, _)| r)
        .sum();
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Average precision: the mean of precision at each true outlier, ranked by score.
pub fn average_precision(scores: &[f64], outlier: &[bool]) -> Option<f64> {
    let positives = outlier.iter().filter(|o| **o).count();
    if positives == 0 {
        return None;
    }
    let order = descending(scores);
    let (mut hits, mut sum) = (0usize, 0.0);
    for (k, &i) in order.iter().enumerate() {
        if outlier[i] {
            hits += 1;
            sum += hits as f64 / (k + 1) as f64;
        }
    }
    Some(sum / positives as f64)
}

/// Precision among the `n` highest scores, n being the number of true outliers.
pub fn precision_at_n(scores: &[f64], outlier: &[bool]) -> Option<f64> {
    let n = outlier.iter().filter(|o| **o).count();
    if n == 0 {
        return None;
    }
    let order = descending(scores);
    let hits = order[..n].iter().filter(|&&i| outlier[i]).count();
    Some(hits as f64 / n as f64)
}

fn descending(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// 1-based ranks, ties sharing their average rank.
fn average_ranks(scores: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_random_and_tied_rankings() {
        let labels = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &labels), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &labels), Some(0.0));
        assert_eq!(roc_auc(&[0.5; 4], &labels), Some(0.5));
        assert_eq!(roc_auc(&[0.5; 2], &[true, true]), None);
        assert_eq!(precision_at_n(&[0.9, 0.8, 0.1, 0.2], &labels), Some(0.0));
        assert_eq!(precision_at_n(&[0.1, 0.9, 0.8, 0.2], &labels), Some(0.5));
        assert_eq!(precision_at_n(&[0.1, 0.2, 0.8, 0.9], &labels), Some(1.0));
        assert_eq!(average_precision(&[0.1, 0.2, 0.8, 0.9], &labels), Some(1.0));
        let ap = average_precision(&[0.9, 0.1, 0.8, 0.2], &labels).unwrap();
        assert!((ap - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-12, "{ap}");
    }
}
